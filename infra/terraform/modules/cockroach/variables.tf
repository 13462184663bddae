variable "environment" {
  description = "Environment name (dev, staging or prod). In prod, delete protection is always on."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "cluster_name" {
  description = "Name of the CockroachDB Cloud cluster (lowercase letters, digits and dashes, 6 to 20 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,18}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 6-20 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "cloud_provider" {
  description = "Cloud that hosts the cluster: GCP, AWS or AZURE. Choose the one your Kubernetes cluster runs on."
  type        = string
  default     = "GCP"

  validation {
    condition     = contains(["GCP", "AWS", "AZURE"], var.cloud_provider)
    error_message = "cloud_provider must be GCP, AWS or AZURE."
  }
}

variable "plan" {
  description = "CockroachDB Cloud plan: BASIC (serverless, pay per use), STANDARD (provisioned serverless vCPUs) or ADVANCED (dedicated nodes)."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["BASIC", "STANDARD", "ADVANCED"], var.plan)
    error_message = "plan must be BASIC, STANDARD or ADVANCED."
  }
}

variable "regions" {
  description = "Cloud regions of the cluster, primary first (e.g. [\"europe-west1\"]). Put it where the Knative cluster runs: every transaction crosses this link."
  type        = list(string)

  validation {
    condition     = length(var.regions) >= 1 && length(var.regions) <= 9 && length(distinct(var.regions)) == length(var.regions)
    error_message = "regions must list 1 to 9 distinct regions."
  }
}

variable "provisioned_virtual_cpus" {
  description = "STANDARD plan only: vCPUs provisioned for the cluster."
  type        = number
  default     = 2

  validation {
    condition     = var.provisioned_virtual_cpus >= 2 && var.provisioned_virtual_cpus <= 200
    error_message = "provisioned_virtual_cpus must be between 2 and 200."
  }
}

variable "dedicated_virtual_cpus" {
  description = "ADVANCED plan only: vCPUs per node."
  type        = number
  default     = 4

  validation {
    condition     = contains([4, 8, 16, 32], var.dedicated_virtual_cpus)
    error_message = "dedicated_virtual_cpus must be 4, 8, 16 or 32."
  }
}

variable "dedicated_storage_gib" {
  description = "ADVANCED plan only: storage per node in GiB."
  type        = number
  default     = 150

  validation {
    condition     = var.dedicated_storage_gib >= 15 && var.dedicated_storage_gib <= 4096
    error_message = "dedicated_storage_gib must be between 15 and 4096."
  }
}

variable "nodes_per_region" {
  description = "ADVANCED plan only: nodes in each region (3 or more survive a node failure)."
  type        = number
  default     = 3

  validation {
    condition     = var.nodes_per_region >= 1 && var.nodes_per_region <= 20
    error_message = "nodes_per_region must be between 1 and 20."
  }
}

variable "delete_protection" {
  description = "Refuse to delete the cluster. Always on when environment is prod, whatever this says."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "How long managed backups are kept. Can be set once; later changes need CockroachDB support."
  type        = number
  default     = 30

  validation {
    condition     = contains([2, 7, 30, 90, 365], var.backup_retention_days)
    error_message = "backup_retention_days must be 2, 7, 30, 90 or 365."
  }
}

variable "backup_frequency_minutes" {
  description = "How often managed backups are taken, in minutes."
  type        = number
  default     = 60

  validation {
    condition     = contains([5, 10, 15, 30, 60, 240, 1440], var.backup_frequency_minutes)
    error_message = "backup_frequency_minutes must be 5, 10, 15, 30, 60, 240 or 1440."
  }
}

variable "database_name" {
  description = "The SQL database Holdfast uses."
  type        = string
  default     = "holdfast"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase SQL identifier."
  }
}

variable "owner_user_name" {
  description = "SQL user that owns the schema and runs migrations (created through the Cloud API, so an admin)."
  type        = string
  default     = "holdfast_owner"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.owner_user_name))
    error_message = "owner_user_name must be a lowercase SQL identifier."
  }
}

variable "functions_user_name" {
  description = "SQL login of the functions, holding only the holdfast_functions role; the migration job creates it (not the Cloud API, whose users are admins)."
  type        = string
  default     = "holdfast_functions_login"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.functions_user_name)) && var.functions_user_name != "holdfast_functions"
    error_message = "functions_user_name must be a lowercase SQL identifier other than the role holdfast_functions."
  }
}

variable "allowed_cidrs" {
  description = "Egress CIDRs of the Kubernetes cluster allowed to reach the SQL port (e.g. [\"203.0.113.0/24\"]). Empty: manage network access outside Terraform (private endpoints)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.allowed_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "allowed_cidrs must be valid IPv4 CIDRs, and never 0.0.0.0/0."
  }
}
