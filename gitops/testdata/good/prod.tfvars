region = "us-east-1"

traffic_split = {
  use1 = {
    squirtle = 1
    snorlax  = 0
  }
}
