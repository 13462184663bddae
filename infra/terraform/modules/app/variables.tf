variable "namespace" {
  description = "Kubernetes namespace for Holdfast; must equal the `namespace:` of the rendered Kustomize overlay."
  type        = string
  default     = "holdfast"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "image" {
  description = "The Holdfast image by digest (REGISTRY/holdfast@sha256:...), the same the overlay renders; the migration job runs it too."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest: REGISTRY/NAME@sha256:<64 hex digits>."
  }
}

variable "manifests_file" {
  description = "Path of the rendered manifests: `kubectl kustomize knative/overlays/ENV > FILE`."
  type        = string

  validation {
    condition     = can(regex("\\.ya?ml$", var.manifests_file))
    error_message = "manifests_file must be a .yaml file rendered by kustomize."
  }
}

variable "function_database_urls" {
  description = "Each function's own HOLDFAST_DATABASE_URL (accounts, transfers, ledger, relay: one login each, made by the migration job with only that function's role); the bootstrap state's `function_database_urls` output."
  type        = map(string)
  sensitive   = true

  validation {
    condition = (
      toset(keys(var.function_database_urls)) == toset(["accounts", "transfers", "ledger", "relay"]) &&
      alltrue([for url in values(var.function_database_urls) : can(regex("^(cockroachdb|postgresql|postgres)://", url))]) &&
      length(distinct(values(var.function_database_urls))) == 4
    )
    error_message = "function_database_urls must map accounts, transfers, ledger and relay each to a distinct cockroachdb:// or postgresql:// URL."
  }
}

variable "database_url" {
  description = "The shared functions' login of releases before migration 0005 (holdfast_functions role), kept while their revisions may start (expand/contract); the bootstrap state's `database_url` output."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^(cockroachdb|postgresql|postgres)://", var.database_url))
    error_message = "database_url must start with cockroachdb://, postgresql:// or postgres://."
  }
}

variable "migration_database_url" {
  description = "URL of the schema's owner, for the migration job only; the bootstrap state's `migration_database_url` output."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^(cockroachdb|postgresql|postgres)://", var.migration_database_url))
    error_message = "migration_database_url must start with cockroachdb://, postgresql:// or postgres://."
  }
}

variable "jwks_json" {
  description = "The JWKS (JSON) of the identity provider whose tokens the API accepts."
  type        = string
  sensitive   = true

  validation {
    condition     = can(length(jsondecode(var.jwks_json).keys) > 0)
    error_message = "jwks_json must be a JSON Web Key Set with a non-empty `keys` list."
  }
}

variable "jwt_issuer" {
  description = "The `iss` bearer tokens must carry (HOLDFAST_JWT_ISSUER)."
  type        = string

  validation {
    condition     = length(var.jwt_issuer) > 0 && var.jwt_issuer != "holdfast-dev"
    error_message = "jwt_issuer must be your identity provider's issuer, not the local dev one."
  }
}

variable "jwt_audience" {
  description = "The `aud` bearer tokens must carry (HOLDFAST_JWT_AUDIENCE)."
  type        = string
  default     = "holdfast"

  validation {
    condition     = length(var.jwt_audience) > 0
    error_message = "jwt_audience must not be empty."
  }
}

variable "ledger_signing_key_pem" {
  description = "Ed25519 private key (PKCS#8 PEM) that signs ledger checkpoints: `openssl genpkey -algorithm ed25519`."
  type        = string
  sensitive   = true

  validation {
    condition     = startswith(trimspace(var.ledger_signing_key_pem), "-----BEGIN PRIVATE KEY-----")
    error_message = "ledger_signing_key_pem must be a PKCS#8 PEM private key (BEGIN PRIVATE KEY)."
  }
}

variable "metadata_keys_json" {
  description = "AES-256 keys of personal data at rest: the JSON file `holdfast keys add --file F --id ID` writes ({\"active\": ID, \"keys\": {ID: base64}})."
  type        = string
  sensitive   = true

  validation {
    condition     = try(contains(keys(jsondecode(var.metadata_keys_json).keys), jsondecode(var.metadata_keys_json).active), false)
    error_message = "metadata_keys_json must be a key file whose `active` key is among its `keys`."
  }
}

variable "migration_timeout" {
  description = "How long `terraform apply` waits for the schema migration job."
  type        = string
  default     = "10m"

  validation {
    condition     = can(regex("^[0-9]+[smh]$", var.migration_timeout))
    error_message = "migration_timeout must be a duration such as 10m."
  }
}
