# Analysis beyond one function (docs/analysis.md, "In Athena"): a Glue Data Catalog database with a table over
# the event lake's Parquet parts — partition projection on the day, so no crawler runs and no partition is ever
# added — and an Athena workgroup that enforces its own encrypted results location and a per-query scan limit.
# The table's columns are the parts' schema as the code writes it (tests/tests/infra.rs compares them with
# `functions::lake::catalog_columns`).

locals {
  glue_database = replace("${var.name}_lake", "-", "_")
  lake_location = "s3://${local.bucket}/lake/events/"
}

resource "aws_glue_catalog_database" "lake" {
  name        = local.glue_database
  description = "The CDP's event lake (Parquet parts written by the tagging function's compaction)"
}

resource "aws_glue_catalog_table" "events" {
  name          = "events"
  database_name = aws_glue_catalog_database.lake.name
  description   = "Every collected event once, by the UTC day it was received (dt)"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    "classification"              = "parquet"
    "EXTERNAL"                    = "TRUE"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.format"        = "yyyy-MM-dd"
    "projection.dt.range"         = "2020-01-01,NOW"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "storage.location.template"   = "${local.lake_location}$${dt}/"
  }

  partition_keys {
    name    = "dt"
    type    = "string"
    comment = "The UTC day the events were received (YYYY-MM-DD)"
  }

  storage_descriptor {
    location      = local.lake_location
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    columns {
      name = "message_id"
      type = "string"
    }
    columns {
      name = "type"
      type = "string"
    }
    columns {
      name = "event"
      type = "string"
    }
    columns {
      name = "timestamp"
      type = "timestamp"
    }
    columns {
      name = "received_at"
      type = "timestamp"
    }
    columns {
      name = "source_id"
      type = "string"
    }
    columns {
      name = "user_id"
      type = "string"
    }
    columns {
      name = "anonymous_id"
      type = "string"
    }
    columns {
      name = "identity_keys"
      type = "array<string>"
    }
    columns {
      name = "properties"
      type = "string"
    }
    columns {
      name = "body"
      type = "string"
    }
  }
}

resource "aws_athena_workgroup" "analysis" {
  name          = "${var.name}-analysis"
  description   = "Queries over the CDP's event lake; results encrypted with the data key, kept 7 days"
  force_destroy = false

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff

    result_configuration {
      output_location = "s3://${local.bucket}/${local.athena_results_prefix}"

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.data.arn
      }
    }
  }

  tags = var.tags
}
