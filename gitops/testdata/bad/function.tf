locals {
  traffic_split = {
    use1 = merge(local.defaults, { snorlax = 0.5 })
  }
}
