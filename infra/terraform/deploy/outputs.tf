output "namespace" {
  description = "The namespace Holdfast runs in."
  value       = module.app.namespace
}

output "applied_manifests" {
  description = "Every Knative object applied, as KIND/NAME."
  value       = module.app.applied_manifests
}

output "migration_job" {
  description = "The schema migration job of this release."
  value       = module.app.migration_job
}
