# State 1 of 2: the database. Applied once per environment by the platform team; the app
# state (../deploy) reads its `database_url` output through TF_VAR_database_url.
# Configure a remote, encrypted backend for real use (this state holds the SQL password):
#   terraform init -backend-config=...   with a `backend "gcs" {}` / `"s3" {}` block here.
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

# Credentials come from the environment only: COCKROACH_API_KEY (a service account's key).
provider "cockroach" {}
