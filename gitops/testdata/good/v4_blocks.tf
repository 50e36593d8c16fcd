resource "cloudflare_load_balancer_pool" "use1" {
  account_id = var.account_id
  name       = "use1"

  origins {
    name    = "squirtle"
    address = "squirtle.use1.example.com"
    weight  = 0.5 # half
  }
  origins {
    name    = "snorlax"
    address = "snorlax.use1.example.com"
    weight  = 0.5
  }
}
