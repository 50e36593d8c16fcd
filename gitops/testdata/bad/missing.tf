locals {
  traffic_split = {
    use1 = {
      squirtle = 0.5
      snorlax  = 0.5
    }
  }
}
