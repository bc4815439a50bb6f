# The Lambda functions: one per binary of functions/src/bin, each with its own role (only the bucket prefixes
# and actions its handler uses), log group, environment and, where the design needs one writer, concurrency 1.

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  statement {
    sid       = "Key"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
  }

  statement {
    sid       = "FailedAsyncInvocations"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.async_failures.arn]
  }

  statement {
    sid       = "Read"
    actions   = ["s3:GetObject"]
    resources = [for prefix in local.bucket_access[each.key].get : "${aws_s3_bucket.data.arn}/${prefix}${endswith(prefix, "/") ? "*" : ""}"]
  }

  statement {
    sid       = "Write"
    actions   = ["s3:PutObject"]
    resources = [for prefix in local.bucket_access[each.key].put : "${aws_s3_bucket.data.arn}/${prefix}${endswith(prefix, "/") ? "*" : ""}"]
  }

  dynamic "statement" {
    for_each = length(local.bucket_access[each.key].delete) > 0 ? [1] : []
    content {
      sid       = "Delete"
      actions   = ["s3:DeleteObject"]
      resources = [for prefix in local.bucket_access[each.key].delete : "${aws_s3_bucket.data.arn}/${prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = length(local.bucket_access[each.key].list) > 0 ? [1] : []
    content {
      sid       = "List"
      actions   = ["s3:ListBucket"]
      resources = [aws_s3_bucket.data.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [for prefix in local.bucket_access[each.key].list : "${prefix}*"]
      }
    }
  }

  dynamic "statement" {
    for_each = contains(keys(local.sqs_triggered), each.key) ? [1] : []
    content {
      sid       = "Queue"
      actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
      resources = [local.sqs_triggered[each.key]]
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.function[each.key].json
}

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_338:retention is the log_retention_days variable (30 days by default); set 365 or more where policy requires a year
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
  tags              = var.tags
}

resource "aws_lambda_function" "function" {
  #checkov:skip=CKV_AWS_117:the functions reach S3 and partners' public webhooks; a VPC would add NAT gateways without narrowing what they can reach (webhooks are SSRF-checked in code)
  #checkov:skip=CKV_AWS_272:the zips are built reproducibly by scripts/build_lambdas.sh and pinned by source_code_hash; add an aws_signer profile where policy requires signed code
  #checkov:skip=CKV_AWS_50:X-Ray tracing would need a grant on every resource ("*"); each run logs one structured line instead
  for_each                       = local.functions
  function_name                  = "${var.name}-${each.key}"
  description                    = each.value.description
  role                           = aws_iam_role.function[each.key].arn
  runtime                        = "provided.al2023"
  architectures                  = ["arm64"]
  handler                        = "bootstrap"
  filename                       = "${var.artifacts_dir}/${each.key}/bootstrap.zip"
  source_code_hash               = filebase64sha256("${var.artifacts_dir}/${each.key}/bootstrap.zip")
  timeout                        = each.value.timeout
  memory_size                    = each.value.memory
  reserved_concurrent_executions = each.value.reserved
  kms_key_arn                    = aws_kms_key.data.arn

  ephemeral_storage {
    size = each.value.ephemeral
  }

  environment {
    # CDP_KMS_KEY_ID wraps the data key that seals personal traits in the profile state (functions::vault).
    variables = merge({
      CDP_BUCKET     = aws_s3_bucket.data.id,
      CDP_KMS_KEY_ID = aws_kms_key.data.arn,
      RUST_LOG       = "info"
    }, each.value.environment)
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.async_failures.arn
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.function, aws_cloudwatch_log_group.function]
}

resource "aws_lambda_event_source_mapping" "queue" {
  for_each                           = local.sqs_triggered
  event_source_arn                   = each.value
  function_name                      = aws_lambda_function.function[each.key].arn
  batch_size                         = local.queue_settings[each.key].batch
  maximum_batching_window_in_seconds = 1
  function_response_types            = ["ReportBatchItemFailures"]
}

# Schedules: the tagging recompute, activation's retries that came due, and ingest's reconciliation.
resource "aws_cloudwatch_event_rule" "schedule" {
  for_each            = local.schedules
  name                = "${var.name}-${each.key}"
  description         = "Runs ${var.name}-${each.key}"
  schedule_expression = each.value
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "schedule" {
  for_each = local.schedules
  rule     = aws_cloudwatch_event_rule.schedule[each.key].name
  arn      = aws_lambda_function.function[each.key].arn
}

resource "aws_lambda_permission" "schedule" {
  for_each      = local.schedules
  statement_id  = "schedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[each.key].arn
}

# The API: a function URL. Every request is authenticated by the function with an API key (scopes, stored
# hashed, compared in constant time); reserved concurrency throttles it (excess requests get 429).
resource "aws_lambda_function_url" "api" {
  #checkov:skip=CKV_AWS_258:the API authenticates every request itself with API keys; IAM auth would force SigV4 on every client application
  function_name      = aws_lambda_function.function["api"].function_name
  authorization_type = "NONE"
  cors {
    allow_origins = ["*"]
    allow_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    allow_headers = ["authorization", "content-type"]
    max_age       = 3600
  }
}
