# Holdfast on a Knative cluster: its namespace, the Secrets and ConfigMap the functions read,
# the schema migration, then every Knative object of the rendered Kustomize overlay.

locals {
  documents = provider::kubernetes::manifest_decode_multi(file(var.manifests_file))
  manifests = { for d in local.documents : "${d.kind}/${d.metadata.name}" => d }
  # The functions' and the relay's images, to check they are the image the migration ran.
  workloads = [
    for d in local.documents : d
    if(d.kind == "Service" && try(d.metadata.labels["holdfast.dev/emits-events"], "") == "true")
    || (d.kind == "Deployment" && try(d.metadata.labels["holdfast.dev/relays-outbox"], "") == "true")
  ]
  function_images = flatten([
    for d in local.workloads : [for c in d.spec.template.spec.containers : c.image]
  ])
  # One login per function (migration 0005's roles); the Job reads each URL from its key.
  functions = ["accounts", "transfers", "ledger", "relay"]
  labels = {
    "app.kubernetes.io/part-of"    = "holdfast"
    "app.kubernetes.io/managed-by" = "terraform"
  }
}

resource "kubernetes_namespace_v1" "holdfast" {
  metadata {
    name = var.namespace
    # SinkBinding in inclusion mode only injects K_SINK in namespaces that opt in.
    labels = merge(local.labels, { "bindings.knative.dev/include" = "true" })
  }
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "holdfast-database"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  # One key per function, each its own login with only its own role (migration 0005); `url`
  # is the shared login of releases before 0005, kept until the contract release.
  data = {
    url       = var.database_url
    accounts  = var.function_database_urls["accounts"]
    transfers = var.function_database_urls["transfers"]
    ledger    = var.function_database_urls["ledger"]
    relay     = var.function_database_urls["relay"]
  }
}

resource "kubernetes_secret_v1" "migration" {
  metadata {
    name      = "holdfast-migration"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    url = var.migration_database_url
  }
}

resource "kubernetes_secret_v1" "jwks" {
  metadata {
    name      = "holdfast-jwks"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    "jwks.json" = var.jwks_json
  }
}

resource "kubernetes_secret_v1" "metadata_keys" {
  metadata {
    name      = "holdfast-metadata-keys"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    "keys.json" = var.metadata_keys_json
  }
}

resource "kubernetes_secret_v1" "ledger_signing_key" {
  metadata {
    name      = "holdfast-ledger-signing-key"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    "signing-key.pem" = var.ledger_signing_key_pem
  }
}

resource "kubernetes_config_map_v1" "auth" {
  metadata {
    name      = "holdfast-auth"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  data = {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }
}

resource "kubernetes_config_map_v1" "grant_script" {
  metadata {
    name      = "holdfast-grant-functions-login"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }
  data = {
    "grant_app_user.py" = file("${path.module}/grant_app_user.py")
  }
}

# The schema migration runs once per image, before any Knative revision of that image: as the
# schema's owner, `holdfast migrate`, then grant_app_user.py gives each function's login its
# own role (accounts, transfers, ledger, relay: migration 0005) and nothing more, and the
# shared login of older releases the holdfast_functions role (the ledger's history stays
# append-only for every one of them).
resource "kubernetes_job_v1" "migrate" {
  metadata {
    # One job per image and script: a new release (or a changed script) runs it again.
    name      = "holdfast-migrate-${substr(sha256("${var.image}${filesha256("${path.module}/grant_app_user.py")}"), 0, 12)}"
    namespace = kubernetes_namespace_v1.holdfast.metadata[0].name
    labels    = local.labels
  }

  spec {
    backoff_limit              = 3
    ttl_seconds_after_finished = 86400

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "holdfast-migrate" })
      }

      spec {
        restart_policy                  = "Never"
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        init_container {
          name              = "migrate"
          image             = var.image
          image_pull_policy = "Always"
          command           = ["holdfast", "migrate"]

          env {
            name = "HOLDFAST_DATABASE_URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.migration.metadata[0].name
                key  = "url"
              }
            }
          }

          resources {
            requests = {
              cpu    = "100m"
              memory = "128Mi"
            }
            limits = {
              cpu    = "500m"
              memory = "256Mi"
            }
          }

          security_context {
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }

        container {
          name              = "grant-functions-login"
          image             = var.image
          image_pull_policy = "Always"
          command           = ["python", "/opt/holdfast-grant/grant_app_user.py"]

          env {
            name = "HOLDFAST_MIGRATION_DATABASE_URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.migration.metadata[0].name
                key  = "url"
              }
            }
          }

          env {
            name = "HOLDFAST_DATABASE_URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.database.metadata[0].name
                key  = "url"
              }
            }
          }

          dynamic "env" {
            for_each = toset(local.functions)
            content {
              name = "HOLDFAST_DATABASE_URL_${upper(env.value)}"
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.database.metadata[0].name
                  key  = env.value
                }
              }
            }
          }

          volume_mount {
            name       = "grant-script"
            mount_path = "/opt/holdfast-grant"
            read_only  = true
          }

          resources {
            requests = {
              cpu    = "50m"
              memory = "96Mi"
            }
            limits = {
              cpu    = "250m"
              memory = "192Mi"
            }
          }

          security_context {
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }

        volume {
          name = "grant-script"
          config_map {
            name         = kubernetes_config_map_v1.grant_script.metadata[0].name
            default_mode = "0444"
          }
        }
      }
    }
  }

  wait_for_completion = true

  timeouts {
    create = var.migration_timeout
    update = var.migration_timeout
  }
}

resource "kubernetes_manifest" "knative" {
  for_each = local.manifests

  manifest = each.value

  # Knative's webhooks fill in defaults (container name, traffic, creator annotations) and
  # the SinkBinding adds K_SINK to the Services: take those from the server.
  computed_fields = [
    "metadata.annotations",
    "metadata.labels",
    "spec.template.metadata.annotations",
    "spec.template.spec.containers",
    "spec.traffic",
    "spec.delivery",
  ]

  field_manager {
    name            = "holdfast-terraform"
    force_conflicts = true
  }

  lifecycle {
    precondition {
      condition     = try(each.value.metadata.namespace, "") == var.namespace
      error_message = "Every rendered manifest must be in namespace ${var.namespace}: render the overlay whose namespace this is."
    }
    precondition {
      condition     = length(local.function_images) > 0 && alltrue([for image in local.function_images : image == var.image])
      error_message = "The rendered functions must run var.image (the image the migration ran): run `kustomize edit set image holdfast=IMAGE` in the overlay and render again."
    }
  }

  depends_on = [
    kubernetes_secret_v1.database,
    kubernetes_secret_v1.migration,
    kubernetes_secret_v1.jwks,
    kubernetes_secret_v1.metadata_keys,
    kubernetes_secret_v1.ledger_signing_key,
    kubernetes_config_map_v1.auth,
    kubernetes_job_v1.migrate,
  ]
}
