# Credentials for the Cloudflare Worker (wrangler secrets S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY): it may put
# objects under raw/ and failed/ and read config/sources.json, nothing else. Workers cannot assume IAM roles,
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
    sid       = "WriteEvents"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.data.arn}/raw/*", "${aws_s3_bucket.data.arn}/failed/*"]
  }
  statement {
    sid       = "ReadSources"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.data.arn}/config/sources.json"]
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
