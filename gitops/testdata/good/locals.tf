# Traffic split between the clusters of each region.
# Changed by hand during incidents only: see the runbook.
locals {
  traffic_split = {
    use1 = {
      squirtle = 0.33 # blue
      snorlax  = 0.33
      staryu   = 0.34
    }
    euw1 = { squirtle = 0.5, snorlax = 0.50 }
  }

  unrelated = "keep me"
}

resource "cloudflare_load_balancer_pool" "use1" {
  account_id = var.account_id
  name       = "use1"

  dynamic "origins" {
    for_each = local.traffic_split.use1
    content {
      name    = origins.key
      address = "${origins.key}.use1.example.com"
      weight  = origins.value
    }
  }
}
