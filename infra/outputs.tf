output "bucket" {
  description = "The data bucket: S3_BUCKET in wrangler.toml."
  value       = aws_s3_bucket.data.id
}

output "region" {
  description = "The bucket's region: S3_REGION in wrangler.toml."
  value       = local.region
}

output "api_url" {
  description = "The API's function URL."
  value       = aws_lambda_function_url.api.function_url
}

output "kms_key_arn" {
  description = "The customer-managed key encrypting the bucket, queues, logs and environments."
  value       = aws_kms_key.data.arn
}

output "functions" {
  description = "Function names by binary."
  value       = { for k, f in aws_lambda_function.function : k => f.function_name }
}

output "edge_access_key_id" {
  description = "For `wrangler secret put S3_ACCESS_KEY_ID`."
  value       = aws_iam_access_key.edge.id
}

output "edge_secret_access_key" {
  description = "For `wrangler secret put S3_SECRET_ACCESS_KEY` (terraform output -raw edge_secret_access_key)."
  value       = aws_iam_access_key.edge.secret
  sensitive   = true
}
