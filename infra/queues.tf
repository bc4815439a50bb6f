# Work queues fed by the bucket's notifications, each with a dead-letter queue, and one queue for failed
# asynchronous invocations (the schedules).

resource "aws_sqs_queue" "dead" {
  for_each                          = toset(["ingest", "activation", "import"])
  name                              = "${var.name}-${each.key}-dlq"
  message_retention_seconds         = 1209600
  kms_master_key_id                 = aws_kms_key.data.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = var.tags
}

resource "aws_sqs_queue" "work" {
  for_each = toset(["ingest", "activation", "import"])
  name     = "${var.name}-${each.key}"
  # Six times the function's timeout, as Lambda advises for SQS sources; an import's file comes back a minute
  # after its run's timeout, so a long file resumes at once.
  visibility_timeout_seconds        = each.key == "import" ? local.functions[each.key].timeout + 60 : 6 * local.functions[each.key].timeout
  message_retention_seconds         = 345600
  kms_master_key_id                 = aws_kms_key.data.arn
  kms_data_key_reuse_period_seconds = 300
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead[each.key].arn
    maxReceiveCount     = local.queue_settings[each.key].receives
  })
  tags = var.tags
}

data "aws_iam_policy_document" "work_queue" {
  for_each = toset(["ingest", "activation", "import"])
  statement {
    sid       = "BucketNotifications"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.work[each.key].arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.data.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_sqs_queue_policy" "work" {
  for_each  = toset(["ingest", "activation", "import"])
  queue_url = aws_sqs_queue.work[each.key].id
  policy    = data.aws_iam_policy_document.work_queue[each.key].json
}

resource "aws_sqs_queue" "async_failures" {
  name                              = "${var.name}-async-failures"
  message_retention_seconds         = 1209600
  kms_master_key_id                 = aws_kms_key.data.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = var.tags
}
