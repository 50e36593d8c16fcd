variable "traffic_split" {
  description = "Origin weights per region"
  type        = map(map(number))
  default = {
    "us-east-1" = {
      squirtle = 0.25
      snorlax  = 0.75
    }
  }
}
