resource "cloudflare_load_balancer_pool" "use1" {
  origins = [
    { name = "squirtle", address = "a" },
    { name = "snorlax", address = "b", weight = 1 },
  ]
}
