module "app" {
  source = "../modules/app"

  namespace              = var.namespace
  image                  = var.image
  manifests_file         = var.manifests_file
  database_url           = var.database_url
  function_database_urls = var.function_database_urls
  migration_database_url = var.migration_database_url
  jwks_json              = var.jwks_json
  metadata_keys_json     = var.metadata_keys_json
  jwt_issuer             = var.jwt_issuer
  jwt_audience           = var.jwt_audience
  ledger_signing_key_pem = var.ledger_signing_key_pem
}
