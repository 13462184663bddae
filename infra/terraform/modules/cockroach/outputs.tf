output "cluster_id" {
  description = "ID of the CockroachDB Cloud cluster."
  value       = cockroach_cluster.this.id
}

output "sql_host" {
  description = "Host name of the cluster's SQL endpoint (primary region)."
  value       = local.sql_host
}

output "database_name" {
  description = "The SQL database Holdfast uses."
  value       = cockroach_database.holdfast.name
}

output "owner_user_name" {
  description = "The SQL user that owns the schema and runs migrations."
  value       = cockroach_sql_user.owner.name
}

output "database_url" {
  description = "HOLDFAST_DATABASE_URL of the functions (their own login; contains its password)."
  value       = local.database_url
  sensitive   = true
}

output "function_database_urls" {
  description = "Each function's HOLDFAST_DATABASE_URL (accounts, transfers, ledger, relay): a login of its own that the migration job creates with only that function's role."
  value       = local.function_database_urls
  sensitive   = true
}

output "migration_database_url" {
  description = "URL the migration job connects with, as the schema's owner (contains its password)."
  value       = local.migration_database_url
  sensitive   = true
}

output "delete_protection" {
  description = "Whether the cluster refuses deletion."
  value       = local.delete_protection
}
