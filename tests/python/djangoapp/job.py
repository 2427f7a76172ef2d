"""The build job: fetches its project and reports what it found (the real
one would build and push an image with REGISTRY_TOKEN)."""

import json
import os
import sys
import zipfile

from credhost import Credentials


def main(bucket, project_name):
    path = Credentials(os.environ.get("CREDENTIALS")).download_project(bucket, project_name)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    print(json.dumps({"path": path, "entries": names, "size": os.path.getsize(path)}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
