output "cluster_id" {
  description = "ID of the CockroachDB Cloud cluster."
  value       = module.cockroach.cluster_id
}

output "sql_host" {
  description = "Host name of the SQL endpoint."
  value       = module.cockroach.sql_host
}

output "database_url" {
  description = "The functions' HOLDFAST_DATABASE_URL for ../deploy: `terraform output -raw database_url`."
  value       = module.cockroach.database_url
  sensitive   = true
}

output "function_database_urls" {
  description = "Each function's database URL for ../deploy: `terraform output -json function_database_urls`."
  value       = module.cockroach.function_database_urls
  sensitive   = true
}

output "migration_database_url" {
  description = "The schema owner's URL for ../deploy's migration job: `terraform output -raw migration_database_url`."
  value       = module.cockroach.migration_database_url
  sensitive   = true
}

output "delete_protection" {
  description = "Whether the cluster refuses deletion."
  value       = module.cockroach.delete_protection
}
