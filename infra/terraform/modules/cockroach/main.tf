# The CockroachDB Cloud cluster Holdfast keeps its state in: one cluster, one database, one
# SQL user with a generated password, managed backups, and delete protection in prod.

locals {
  functions         = ["accounts", "transfers", "ledger", "relay"]
  dedicated         = var.plan == "ADVANCED"
  delete_protection = var.environment == "prod" ? true : var.delete_protection
}

# Passwords go into URLs and SQL literals: letters and digits only, 40 of them.
resource "random_password" "owner" {
  length  = 40
  special = false
}

resource "random_password" "functions" {
  length  = 40
  special = false
}

# One login per function (migration 0005: a role each, only the tables it touches).
resource "random_password" "function" {
  for_each = toset(local.functions)

  length  = 40
  special = false
}

resource "cockroach_cluster" "this" {
  name              = var.cluster_name
  cloud_provider    = var.cloud_provider
  plan              = var.plan
  delete_protection = local.delete_protection

  serverless = local.dedicated ? null : {
    usage_limits = var.plan == "STANDARD" ? {
      provisioned_virtual_cpus = var.provisioned_virtual_cpus
    } : null
  }

  dedicated = local.dedicated ? {
    num_virtual_cpus = var.dedicated_virtual_cpus
    storage_gib      = var.dedicated_storage_gib
  } : null

  # Serverless clusters name exactly one primary region; dedicated ones name none.
  regions = [
    for index, region in var.regions : {
      name       = region
      primary    = local.dedicated ? null : index == 0
      node_count = local.dedicated ? var.nodes_per_region : null
    }
  ]

  backup_config = {
    enabled           = true
    frequency_minutes = var.backup_frequency_minutes
    retention_days    = var.backup_retention_days
  }

  labels = {
    app         = "holdfast"
    environment = var.environment
  }
}

resource "cockroach_database" "holdfast" {
  cluster_id = cockroach_cluster.this.id
  name       = var.database_name
}

# Only the owner is made here: the functions' login is made by the migration job in SQL
# (infra/terraform/modules/app/grant_app_user.py), with nothing but the holdfast_functions role.
resource "cockroach_sql_user" "owner" {
  cluster_id = cockroach_cluster.this.id
  name       = var.owner_user_name
  password   = random_password.owner.result
}

resource "cockroach_allow_list" "kubernetes" {
  for_each = toset(var.allowed_cidrs)

  cluster_id = cockroach_cluster.this.id
  name       = "holdfast-${replace(each.value, "/[./]/", "-")}"
  cidr_ip    = split("/", each.value)[0]
  cidr_mask  = tonumber(split("/", each.value)[1])
  sql        = true
  ui         = false
}

locals {
  sql_host = cockroach_cluster.this.regions[0].sql_dns
  # verify-full against the system CA store: CockroachDB Cloud's SQL certificates are
  # publicly signed (ADVANCED clusters with a private CA: pass sslrootcert instead).
  #checkov:skip=CKV_SECRET_4:A format template with %s placeholders, not a credential; the passwords come from random_password at apply time.
  url_template = "cockroachdb://%s:%s@%s:26257/%s?sslmode=verify-full&sslrootcert=system&application_name=%s"
  migration_database_url = format(
    local.url_template,
    cockroach_sql_user.owner.name,
    random_password.owner.result,
    local.sql_host,
    cockroach_database.holdfast.name,
    "holdfast-migrate",
  )
  database_url = format(
    local.url_template,
    var.functions_user_name,
    random_password.functions.result,
    local.sql_host,
    cockroach_database.holdfast.name,
    "holdfast",
  )
  function_database_urls = {
    for function in local.functions : function => format(
      local.url_template,
      "holdfast_${function}_login",
      random_password.function[function].result,
      local.sql_host,
      cockroach_database.holdfast.name,
      "holdfast-${function}",
    )
  }
}
