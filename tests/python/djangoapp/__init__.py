"""A small Django project in the shape of the deployment service credhost
replaces: its deploy view stores the uploaded ZIP with
``Credentials(platform).upload_project(name, obj)``, its build-job helper
renders ``get_registry_token()`` and ``get_credentials()`` into a job, and the
job fetches the project with ``download_project(bucket, name)``. The only
change from the original is the import: ``from credhost import Credentials``."""
