# Provider versions are pinned exactly. Terraform 1.8+ for the kubernetes provider's
# functions (provider::kubernetes::manifest_decode_multi).
terraform {
  required_version = ">= 1.8.0, < 2.0.0"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "= 2.38.0"
    }
  }
}
