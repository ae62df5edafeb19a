"""The browser app: server-rendered pages (Jinja2), static JS/CSS, cookie sessions, languages."""
