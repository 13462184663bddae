# Provider versions are pinned exactly: a plan is only reproducible with the same providers.
terraform {
  required_version = ">= 1.8.0, < 2.0.0"

  required_providers {
    cockroach = {
      source  = "cockroachdb/cockroach"
      version = "= 1.12.2"
    }
    random = {
      source  = "hashicorp/random"
      version = "= 3.7.2"
    }
  }
}
