"""The console at /admin: sync jobs, exposed sets and history, edited in the browser.

Every page is server-rendered HTML (service/admin/page.py); every change goes through the
stored configuration (service/config_store.py), validated like r2sf.toml and kept with who saved
it. Authentication happened before a request gets here (service/admin/security.py); each POST
is checked for its CSRF token. Secrets are never rendered: URLs stay in config vars.
"""
