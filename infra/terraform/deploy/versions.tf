# State 2 of 2: Holdfast on the Knative cluster (Secrets, migration, Knative objects).
# Applied on every release. Its state holds the Secrets' values: use a remote, encrypted
# backend (add a `backend` block here and `terraform init -backend-config=...`).
terraform {
  required_version = ">= 1.8.0, < 2.0.0"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "= 2.38.0"
    }
  }
}

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}
