variable "name" {
  description = "Name prefix of every resource (lower case letters, digits and dashes; it also names the bucket, with the account id)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,24}$", var.name))
    error_message = "name must be 3 to 25 characters: lower case letters, digits and dashes, starting with a letter."
  }
}

variable "artifacts_dir" {
  description = "Folder holding the functions' zips as `scripts/build_lambdas.sh` writes them: <dir>/<function>/bootstrap.zip."
  type        = string
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the functions' logs."
  type        = number
  default     = 30
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "raw_infrequent_access_after_days" {
  description = "Raw events move to S3 Standard-IA after this many days."
  type        = number
  default     = 30
  validation {
    condition     = var.raw_infrequent_access_after_days >= 30
    error_message = "S3 moves objects to Standard-IA after 30 days at the earliest."
  }
}

variable "failed_retention_days" {
  description = "Rejected events (failed/) are deleted after this many days."
  type        = number
  default     = 30
  validation {
    condition     = var.failed_retention_days >= 1
    error_message = "failed_retention_days must be at least 1."
  }
}

variable "lake_retention_days" {
  description = "Compacted events (lake/) are deleted after this many days."
  type        = number
  default     = 730
  validation {
    condition     = var.lake_retention_days >= 1
    error_message = "lake_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Older versions of rewritten objects are deleted after this many days. Erasures rewrite objects: this bounds how long an erased person's data survives in old versions."
  type        = number
  default     = 7
  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && var.noncurrent_version_retention_days <= 30
    error_message = "noncurrent_version_retention_days must be 1 to 30 (an erasure must finish within a month)."
  }
}

variable "tagging_schedule" {
  description = "How often the tagging function recomputes tags and audiences and advances privacy requests (an EventBridge schedule expression)."
  type        = string
  default     = "rate(15 minutes)"
  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.tagging_schedule))
    error_message = "tagging_schedule must be an EventBridge rate(...) or cron(...) expression."
  }
}

variable "tagging_memory_mb" {
  description = "Memory of the tagging function. A full recompute took 1.3 GB at 3 million profiles and grows by about 320 bytes per profile (the profiles as compact columns, the members); a recompute that backfills new tag versions 2.0 GB, growing by about 510 bytes per profile (plus the batch of profiles it rewrites, which does not grow); measured by `cdp bench tagging` (docs/benchmarks.md). The default, the most Lambda allows, serves 10 million profiles with room to spare (about 3.6 GB, 5.6 GB when backfilling)."
  type        = number
  default     = 10240
  validation {
    condition     = var.tagging_memory_mb >= 1024 && var.tagging_memory_mb <= 10240
    error_message = "tagging_memory_mb must be 1024 to 10240 (Lambda's limit)."
  }
}

variable "tagging_ephemeral_mb" {
  description = "Ephemeral storage (/tmp) of the tagging function: a full recompute keeps the events there by chunk of profiles while it works (the report's spilledBytes; about 80 bytes per event in `cdp bench tagging`; of properties longer than 256 bytes only those tags and audiences read are kept): the default holds about 120 million events; a recompute that backfills also keeps each profile's values and the events of the profiles it rebuilds there: 2.15 GB at 3 million profiles and 30 million events."
  type        = number
  default     = 10240
  validation {
    condition     = var.tagging_ephemeral_mb >= 512 && var.tagging_ephemeral_mb <= 10240
    error_message = "tagging_ephemeral_mb must be 512 to 10240 (Lambda's limits)."
  }
}

variable "privacy_grace_seconds" {
  description = "How long state objects that held an erased person stay for readers of the previous state before deletion."
  type        = number
  default     = 300
  validation {
    condition     = var.privacy_grace_seconds >= 60
    error_message = "privacy_grace_seconds must be at least 60 (longer than any function's read of the state)."
  }
}

variable "api_max_concurrency" {
  description = "Throttle of the API: at most this many requests are served at once (reserved concurrency); more get 429."
  type        = number
  default     = 50
  validation {
    condition     = var.api_max_concurrency >= 1
    error_message = "api_max_concurrency must be at least 1."
  }
}

variable "alarm_topic_arn" {
  description = "SNS topic that receives the alarms (dead-letter queues, errors, queue age); none when empty."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "import_ephemeral_mb" {
  description = "The import function's /tmp in MB (512-10240): the largest file put under imports/ must fit"
  type        = number
  default     = 4096
  validation {
    condition     = var.import_ephemeral_mb >= 512 && var.import_ephemeral_mb <= 10240
    error_message = "import_ephemeral_mb is 512 to 10240."
  }
}

variable "athena_bytes_scanned_cutoff" {
  description = "Bytes one Athena query of the analysis workgroup may scan before it is cancelled (at least 10 MB)."
  type        = number
  default     = 107374182400
  validation {
    condition     = var.athena_bytes_scanned_cutoff >= 10485760
    error_message = "athena_bytes_scanned_cutoff is at least 10485760 (10 MB), Athena's minimum."
  }
}
