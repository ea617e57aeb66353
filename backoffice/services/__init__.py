"""Services: plain functions for work that is not a form (seeding, import, export)."""
