# A complete deployment: the module with the zips `scripts/build_lambdas.sh` writes under target/lambda.
#   ./scripts/build_lambdas.sh && cd infra/examples/complete && terraform init && terraform apply

terraform {
  required_version = ">= 1.6.0, < 2.0.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-central-1"
}

variable "alarm_email" {
  description = "Where alarms are mailed (confirm the subscription email); none when empty."
  type        = string
  default     = ""
}

resource "aws_sns_topic" "alarms" {
  name              = "cdp-alarms"
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alarms" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

module "cdp" {
  source          = "../.."
  name            = "cdp"
  artifacts_dir   = "${path.module}/../../../target/lambda"
  alarm_topic_arn = aws_sns_topic.alarms.arn
  tags            = { project = "cdp" }
}

output "bucket" {
  description = "S3_BUCKET for wrangler.toml."
  value       = module.cdp.bucket
}

output "api_url" {
  description = "The API."
  value       = module.cdp.api_url
}

output "edge_access_key_id" {
  description = "wrangler secret put S3_ACCESS_KEY_ID"
  value       = module.cdp.edge_access_key_id
}

output "edge_secret_access_key" {
  description = "wrangler secret put S3_SECRET_ACCESS_KEY"
  value       = module.cdp.edge_secret_access_key
  sensitive   = true
}
