#!/bin/sh
# Starts SeaweedFS (all components in one process: `weed mini`) for docker-compose with S3 keys
# required. The S3 identities file is rendered here from the environment, so no secret is baked
# into the image or the repository; the bucket is created at start. Extra arguments are passed on.
set -eu

: "${S3_ACCESS_KEY:?S3_ACCESS_KEY must be set}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY must be set}"
S3_BUCKET="${S3_BUCKET:-observatory}"
DATA_DIR="${SEAWEEDFS_DATA_DIR:-/data}"
CONFIG="${SEAWEEDFS_S3_CONFIG:-/tmp/seaweedfs-s3.json}"

case "$S3_ACCESS_KEY$S3_SECRET_KEY" in
    *'"'* | *'\'* | *[[:space:]]*)
        echo "seaweedfs-start.sh: S3 keys must not contain quotes, backslashes or whitespace" >&2
        exit 64
        ;;
esac
if [ "${#S3_SECRET_KEY}" -lt 16 ]; then
    echo "seaweedfs-start.sh: S3_SECRET_KEY must have at least 16 characters" >&2
    exit 64
fi

# One identity, allowed into its own bucket only: no anonymous access, no other buckets.
umask 077
cat >"$CONFIG" <<JSON
{
  "identities": [
    {
      "name": "observatory",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Read:$S3_BUCKET", "Write:$S3_BUCKET", "List:$S3_BUCKET", "Tagging:$S3_BUCKET"]
    }
  ]
}
JSON

mkdir -p "$DATA_DIR"
exec weed mini -dir="$DATA_DIR" -s3.config="$CONFIG" -bucket="$S3_BUCKET" \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 "$@"
