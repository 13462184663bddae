variable "environment" {
  description = "Environment name (dev, staging or prod). prod turns delete protection on."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "cluster_name" {
  description = "Name of the CockroachDB Cloud cluster, e.g. holdfast-prod."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,18}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 6-20 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "cloud_provider" {
  description = "Cloud that hosts the cluster (GCP, AWS or AZURE): the one the Kubernetes cluster runs on."
  type        = string
  default     = "GCP"

  validation {
    condition     = contains(["GCP", "AWS", "AZURE"], var.cloud_provider)
    error_message = "cloud_provider must be GCP, AWS or AZURE."
  }
}

variable "plan" {
  description = "CockroachDB Cloud plan: BASIC, STANDARD or ADVANCED."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["BASIC", "STANDARD", "ADVANCED"], var.plan)
    error_message = "plan must be BASIC, STANDARD or ADVANCED."
  }
}

variable "regions" {
  description = "Cloud regions of the cluster, primary first; next to the Kubernetes cluster."
  type        = list(string)

  validation {
    condition     = length(var.regions) >= 1
    error_message = "regions must name at least one region."
  }
}

variable "provisioned_virtual_cpus" {
  description = "STANDARD plan: provisioned vCPUs."
  type        = number
  default     = 2

  validation {
    condition     = var.provisioned_virtual_cpus >= 2
    error_message = "provisioned_virtual_cpus must be at least 2."
  }
}

variable "delete_protection" {
  description = "Refuse to delete the cluster (always on in prod)."
  type        = bool
  default     = true
}

variable "allowed_cidrs" {
  description = "Egress CIDRs of the Kubernetes cluster allowed to reach the SQL port; empty to manage access elsewhere."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.allowed_cidrs, "0.0.0.0/0")
    error_message = "allowed_cidrs must not open the database to the whole internet."
  }
}
