resource "cloudflare_load_balancer_pool" "use1" {
  account_id = var.account_id
  name       = "use1"

  # v5: origins is a list attribute, sorted by name (cloudflare#7179)
  origins = [
    {
      name    = "snorlax"
      address = "snorlax.use1.example.com"
      weight  = 0.33
      enabled = true
    },
    {
      name    = "squirtle"
      address = "squirtle.use1.example.com"
      weight  = 0.33
    },
    { name = "staryu", address = "staryu.use1.example.com", weight = 0.34 },
  ]
}
