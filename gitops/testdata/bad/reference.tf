locals {
  traffic_split = {
    use1 = {
      squirtle = 0.33
      snorlax  = var.snorlax_weight
      staryu   = 0.34
    }
  }
}
