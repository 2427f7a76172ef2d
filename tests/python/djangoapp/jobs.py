"""The build-job helper: the job's environment from the platform's
credentials, in the form a job spec carries (a list of name/value pairs)."""

from django.conf import settings

from credhost import Credentials

# Jobs handed to the scheduler; in the test project the scheduler is this list.
LAUNCHED = []


def job_environment():
    credentials = Credentials(settings.CREDENTIALS)
    entries = dict(credentials.get_credentials())
    token = credentials.get_registry_token()
    if token is not None:
        entries["REGISTRY_TOKEN"] = token
    return [{"name": key, "value": str(value)} for key, value in sorted(entries.items())]


def build_job(project_id, project_name):
    env = job_environment()
    bucket = next(e["value"] for e in env if e["name"] == "PROJECTS_BUCKET")
    return {
        "name": f"build-{project_id}",
        "env": env,
        "command": ["python", "-m", "djangoapp.job", bucket, project_name],
    }


def launch(job):
    LAUNCHED.append(job)
