output "namespace" {
  description = "The namespace Holdfast runs in."
  value       = kubernetes_namespace_v1.holdfast.metadata[0].name
}

output "applied_manifests" {
  description = "Every Knative object applied, as KIND/NAME."
  value       = sort(keys(kubernetes_manifest.knative))
}

output "migration_job" {
  description = "The schema migration job of this image."
  value       = kubernetes_job_v1.migrate.metadata[0].name
}

output "secret_names" {
  description = "The Kubernetes Secrets the functions read."
  value = [
    kubernetes_secret_v1.database.metadata[0].name,
    kubernetes_secret_v1.jwks.metadata[0].name,
    kubernetes_secret_v1.metadata_keys.metadata[0].name,
    kubernetes_secret_v1.ledger_signing_key.metadata[0].name,
  ]
}
