"""The deploy view: receives a project ZIP and stores it, then prepares the
build job that will fetch it."""

from django.conf import settings
from django.http import HttpResponseBadRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from credhost import Credentials

from .jobs import build_job, launch


@csrf_exempt
@require_POST
def deploy(request, project_id):
    project_obj = request.FILES.get("project")
    if project_obj is None:
        return HttpResponseBadRequest("no project file")
    project_name = f"{project_id}.zip"
    Credentials(settings.CREDENTIALS).upload_project(project_name, project_obj)
    job = build_job(project_id, project_name)
    launch(job)
    return JsonResponse({"project": project_name, "job": job["name"]})
