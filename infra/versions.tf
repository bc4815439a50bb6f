terraform {
  # Tested with Terraform 1.9 and the AWS provider 5.x (see README.md).
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }
}
