variable "kubeconfig_path" {
  description = "Path of the kubeconfig that reaches the Knative cluster."
  type        = string
  default     = "~/.kube/config"

  validation {
    condition     = length(var.kubeconfig_path) > 0
    error_message = "kubeconfig_path must not be empty."
  }
}

variable "kube_context" {
  description = "The kubeconfig context of the Knative cluster (explicit, so a plan never lands on the wrong cluster)."
  type        = string

  validation {
    condition     = length(var.kube_context) > 0
    error_message = "kube_context must name a context."
  }
}

variable "namespace" {
  description = "Namespace of the rendered overlay (knative/overlays/*/kustomization.yaml)."
  type        = string
  default     = "holdfast"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "image" {
  description = "The Holdfast image by digest, as set in the overlay: REGISTRY/holdfast@sha256:..."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest."
  }
}

variable "manifests_file" {
  description = "The rendered overlay: `kubectl kustomize knative/overlays/prod > FILE`."
  type        = string

  validation {
    condition     = can(regex("\\.ya?ml$", var.manifests_file))
    error_message = "manifests_file must be a .yaml file."
  }
}

variable "database_url" {
  description = "The shared login of releases before migration 0005 (expand/contract): export TF_VAR_database_url from the bootstrap state's output."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^(cockroachdb|postgresql|postgres)://", var.database_url))
    error_message = "database_url must start with cockroachdb://, postgresql:// or postgres://."
  }
}

variable "function_database_urls" {
  description = "Each function's own database URL (accounts, transfers, ledger, relay): export TF_VAR_function_database_urls from the bootstrap state's `function_database_urls` output (-json)."
  type        = map(string)
  sensitive   = true

  validation {
    condition     = toset(keys(var.function_database_urls)) == toset(["accounts", "transfers", "ledger", "relay"])
    error_message = "function_database_urls must have exactly the keys accounts, transfers, ledger and relay."
  }
}

variable "migration_database_url" {
  description = "The schema owner's URL for the migration job: export TF_VAR_migration_database_url from the bootstrap state's output."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^(cockroachdb|postgresql|postgres)://", var.migration_database_url))
    error_message = "migration_database_url must start with cockroachdb://, postgresql:// or postgres://."
  }
}

variable "jwks_json" {
  description = "JWKS of the identity provider (export TF_VAR_jwks_json)."
  type        = string
  sensitive   = true

  validation {
    condition     = can(jsondecode(var.jwks_json).keys)
    error_message = "jwks_json must be a JSON Web Key Set."
  }
}

variable "metadata_keys_json" {
  description = "AES keys of personal data at rest: the file `holdfast keys add` writes (export TF_VAR_metadata_keys_json)."
  type        = string
  sensitive   = true

  validation {
    condition     = can(jsondecode(var.metadata_keys_json).active)
    error_message = "metadata_keys_json must be a holdfast key file (JSON with `active` and `keys`)."
  }
}

variable "jwt_issuer" {
  description = "The `iss` the API's bearer tokens carry."
  type        = string

  validation {
    condition     = length(var.jwt_issuer) > 0
    error_message = "jwt_issuer must not be empty."
  }
}

variable "jwt_audience" {
  description = "The `aud` the API's bearer tokens carry."
  type        = string
  default     = "holdfast"

  validation {
    condition     = length(var.jwt_audience) > 0
    error_message = "jwt_audience must not be empty."
  }
}

variable "ledger_signing_key_pem" {
  description = "Ed25519 private key (PEM) that signs ledger checkpoints (export TF_VAR_ledger_signing_key_pem)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(trimspace(var.ledger_signing_key_pem)) > 0
    error_message = "ledger_signing_key_pem must not be empty."
  }
}
