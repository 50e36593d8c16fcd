# The use1 pool's origin weights, as the team declares them. Verdict's write-back after a
# promotion rewrites only the numbers below (verdict sync, docs/gitops.md).
locals {
  traffic_split = {
    use1 = {
      snorlax  = 0.33
      squirtle = 0.33
      staryu   = 0.34 # takes the remainder
    }
  }
}

resource "cloudflare_load_balancer_pool" "use1" {
  account_id = var.cloudflare_account_id
  name       = "prod-use1"

  dynamic "origins" {
    for_each = local.traffic_split.use1
    content {
      name    = "prod-use1-${origins.key}-ambassador"
      address = "${origins.key}.use1.example.com"
      weight  = origins.value
    }
  }
}
