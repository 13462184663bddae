module "cockroach" {
  source = "../modules/cockroach"

  environment              = var.environment
  cluster_name             = var.cluster_name
  cloud_provider           = var.cloud_provider
  plan                     = var.plan
  regions                  = var.regions
  provisioned_virtual_cpus = var.provisioned_virtual_cpus
  delete_protection        = var.delete_protection
  allowed_cidrs            = var.allowed_cidrs
}
