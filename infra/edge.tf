# Credentials for the Cloudflare Worker (wrangler secrets S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY): it may put
# objects under raw/ and failed/ and read config/sources.json, the webhook sources' signing secrets and the
# suppression list, nothing else. Workers cannot assume IAM roles,
# hence a user with an access key; rotate it by tainting aws_iam_access_key.edge and re-running the secrets.

resource "aws_iam_user" "edge" {
  #checkov:skip=CKV_AWS_273:a Cloudflare Worker cannot use SSO or assume a role; this user holds one narrowly scoped access key
  name = "${var.name}-edge-collector"
  tags = var.tags
}

resource "aws_iam_group" "edge" {
  name = "${var.name}-edge-collectors"
}

resource "aws_iam_group_membership" "edge" {
  name  = "${var.name}-edge-collectors"
  group = aws_iam_group.edge.name
  users = [aws_iam_user.edge.name]
}

data "aws_iam_policy_document" "edge" {
  statement {
    sid     = "WriteEvents"
    actions = ["s3:PutObject"]
    # raw/ and failed/, and the counts of suppressed people's events it drops (never stored)
    resources = [
      "${aws_s3_bucket.data.arn}/raw/*",
      "${aws_s3_bucket.data.arn}/failed/*",
      "${aws_s3_bucket.data.arn}/privacy/v1/dropped/*",
    ]
  }
  statement {
    sid     = "ReadSourcesAndSuppressions"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.data.arn}/config/sources.json",
      # the webhook sources' signing secrets (read only for POST /v1/webhooks/<source>)
      "${aws_s3_bucket.data.arn}/secrets/v1/sources.json",
      "${aws_s3_bucket.data.arn}/privacy/v1/suppressed.json",
      # the key the list's hashes are made with (read only while someone is suppressed)
      "${aws_s3_bucket.data.arn}/keys/v1/identifiers.key",
    ]
  }
  statement {
    sid       = "Key"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_group_policy" "edge" {
  name   = "${var.name}-edge-collector"
  group  = aws_iam_group.edge.name
  policy = data.aws_iam_policy_document.edge.json
}

resource "aws_iam_access_key" "edge" {
  user = aws_iam_user.edge.name
}

# The suppression list exists from the start: the edge collector reads it for every request, and allowed to read
# only that object it would get 403 (not 404) while the object is missing, and refuse events. The API and the
# privacy processing edit it afterwards, so Terraform leaves its content alone.
resource "aws_s3_object" "suppression_list" {
  bucket       = aws_s3_bucket.data.id
  key          = "privacy/v1/suppressed.json"
  content      = jsonencode({ suppressed = [], erasing = {} })
  content_type = "application/json"
  kms_key_id   = aws_kms_key.data.arn
  lifecycle {
    ignore_changes = [content, etag, source_hash, content_type, kms_key_id]
  }
}

# The webhook sources' signing secrets, likewise: the edge collector may read only this object, so while it was
# missing a webhook would get 403 (not 404) and be refused. `cdp source` and the API write it afterwards.
resource "aws_s3_object" "source_secrets" {
  bucket       = aws_s3_bucket.data.id
  key          = "secrets/v1/sources.json"
  content      = jsonencode({ version = 1, secrets = {} })
  content_type = "application/json"
  kms_key_id   = aws_kms_key.data.arn
  lifecycle {
    ignore_changes = [content, etag, source_hash, content_type, kms_key_id]
  }
}
