locals {
  traffic_split = { use1 = { squirtle = 1.5, snorlax = 0 } }
}
