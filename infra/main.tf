# The CDP's AWS side: one bucket (+ its access-log bucket) under a customer-managed KMS key, SQS queues fed by
# the bucket's notifications, the five Lambda functions with one least-privilege role each, their schedules,
# the API's function URL, alarms, and the edge worker's credentials. See README.md for the deploy procedure.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition
  bucket    = "${var.name}-${local.account}"

  # The storage layout (shared::storage, ARCHITECTURE.md): what the bucket's notifications watch.
  raw_prefix     = "raw/"
  outbox_prefix  = "deliveries/v1/outbox/"
  imports_prefix = "imports/"
  # Athena's query results (personal data like the lake's: encrypted with the data key, expired after 7 days).
  athena_results_prefix = "athena-results/"

  # One entry per binary of functions/src/bin. `reserved` is the function's reserved concurrency: 1 where the
  # design needs a single writer (the tagging recompute; the activation dispatcher owns the delivery lanes).
  functions = {
    ingest = {
      description = "ID-Mapping, profiles, incremental tags and real-time audiences for new raw objects (SQS)"
      timeout     = 300
      memory      = 1769
      ephemeral   = 512
      reserved    = 10
      environment = {}
    }
    tagging = {
      description = "Scheduled full recompute of tags and audiences; compacts raw events into the lake; advances privacy erasures"
      timeout     = 900
      memory      = var.tagging_memory_mb
      ephemeral   = var.tagging_ephemeral_mb
      reserved    = 1
      # Two malloc arenas: memory the recompute frees is reused by the backfill (functions::tagging::MALLOC_ARENAS).
      environment = { CDP_PRIVACY_GRACE_SECONDS = tostring(var.privacy_grace_seconds), MALLOC_ARENA_MAX = "2" }
    }
    activation = {
      description = "Signed webhook deliveries to partners: outbox (SQS) and retries (schedule)"
      timeout     = 300
      memory      = 512
      ephemeral   = 512
      reserved    = 1
      environment = {}
    }
    api = {
      description = "The HTTP API: profiles, management, privacy requests, audit (function URL)"
      timeout     = 30
      memory      = 1769
      ephemeral   = 512
      reserved    = var.api_max_concurrency
      environment = {}
    }
    import = {
      description = "Files put under imports/<source>/ (SQS) as events in raw/, through the source's mapping; resumes long files from a checkpoint"
      timeout     = 900
      memory      = 1769
      # Each file is downloaded to /tmp before it is read.
      ephemeral = var.import_ephemeral_mb
      reserved  = 2
      # A run stops taking rows this long before its deadline and writes its checkpoint (functions::import::lambda).
      environment = { CDP_IMPORT_MARGIN_SECONDS = "60" }
    }
  }

  # What each function may do in the bucket: actions by key prefix (every prefix ends with `/` or names one
  # object). Derived from the handlers (functions/src); tests/tests/infra.rs keeps the two in agreement.
  bucket_access = {
    ingest = {
      # list raw/ and the ingest/ watermark: the scheduled reconciliation finds objects whose notification was lost
      get = ["raw/", "state/", "config/", "ingest/", "tags/v1/ready.json", "privacy/v1/suppressed.json", "keys/"]
      # catalog/v1/pending/: what each raw object showed of the data, for the data dictionary
      put    = ["state/", "ingest/", "failed/ingest/", "deliveries/v1/outbox/", "privacy/v1/dropped/", "keys/", "catalog/v1/pending/"]
      delete = ["deliveries/v1/outbox/"]
      list   = ["raw/"]
    }
    tagging = {
      # catalog/: folds the pending parts into the data dictionary; analysis/v1/results/: an erasure drops saved
      # insights' kept results (written by `cdp up`'s API)
      get    = ["raw/", "failed/", "state/", "lake/", "config/", "tags/", "audiences/", "products/", "deliveries/", "privacy/", "keys/", "catalog/"]
      put    = ["raw/", "failed/", "state/", "lake/", "tags/", "audiences/", "products/", "deliveries/", "privacy/", "audit/", "keys/", "catalog/v1/dictionary.json.gz"]
      delete = ["raw/", "failed/", "state/", "lake/", "deliveries/", "catalog/v1/pending/", "analysis/v1/results/"]
      list   = ["raw/", "failed/", "state/", "lake/", "audiences/", "deliveries/", "privacy/", "catalog/v1/pending/", "analysis/v1/results/"]
    }
    activation = {
      # the destinations' signing secrets, readable by this function and the API alone
      get    = ["deliveries/", "config/", "secrets/v1/destinations.json"]
      put    = ["deliveries/", "raw/"]
      delete = ["deliveries/"]
      list   = ["deliveries/"]
    }
    import = {
      # imports/: the files and each source's mapping.json; ingest/imports/: the checkpoints of long files
      get    = ["imports/", "config/", "privacy/v1/suppressed.json", "keys/", "ingest/imports/"]
      put    = ["raw/", "failed/imports/", "privacy/v1/dropped/", "ingest/imports/", "keys/"]
      delete = []
      # a file's size, read before it is downloaded in ranges
      list = ["imports/"]
    }
    api = {
      # catalog/: the data dictionary, read by GET /v1/catalog and when definitions are checked
      get    = ["raw/", "lake/", "state/", "config/", "secrets/", "access/", "audit/", "privacy/", "deliveries/", "audiences/", "tags/", "keys/", "catalog/"]
      put    = ["state/", "config/", "secrets/", "access/", "audit/", "privacy/", "deliveries/v1/replay/", "keys/"]
      delete = ["deliveries/v1/status/"]
      list   = ["raw/", "lake/", "audit/", "privacy/", "audiences/", "deliveries/", "catalog/v1/pending/"]
    }
  }

  sqs_triggered = {
    ingest     = aws_sqs_queue.work["ingest"].arn
    activation = aws_sqs_queue.work["activation"].arn
    import     = aws_sqs_queue.work["import"].arn
  }

  # Per work queue: messages per invocation, and deliveries before a message goes to its dead-letter queue. An
  # import takes one file per run and hands a long file back to its queue after each run, so it may take
  # many.
  queue_settings = {
    ingest     = { batch = 10, receives = 5 }
    activation = { batch = 10, receives = 5 }
    import     = { batch = 1, receives = 20 }
  }

  schedules = {
    tagging    = var.tagging_schedule
    activation = "rate(1 minute)"
    # Reconciliation (functions::ingest::reconcile): raw objects whose notification was lost or dead-lettered.
    ingest = "rate(5 minutes)"
  }
}

# ---------------------------------------------------------------------------------------------------------
# Encryption: one customer-managed key, rotated yearly, for the bucket, the queues, the logs and the
# functions' environment.

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself; the account keeps administering it (AWS's default key policy)
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is the key itself, not every resource
  #checkov:skip=CKV_AWS_109:a key policy's "*" resource is the key itself; services get only encrypt/decrypt, bound to this account
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" is this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "S3NotifiesEncryptedQueues"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
  statement {
    sid       = "LogsEncrypt"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name}-*"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${var.name}: events, state, queues, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.data.key_id
}
