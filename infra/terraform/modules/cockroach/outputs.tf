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

output "sql_user_name" {
  description = "The SQL user Holdfast connects as."
  value       = cockroach_sql_user.holdfast.name
}

output "database_url" {
  description = "HOLDFAST_DATABASE_URL for the app state (contains the password)."
  value       = local.database_url
  sensitive   = true
}

output "delete_protection" {
  description = "Whether the cluster refuses deletion."
  value       = local.delete_protection
}
