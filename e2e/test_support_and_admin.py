"""Support staff fix a record without delete or export; an admin manages a user's access."""

from __future__ import annotations

from e2e.conftest import login, screenshot


def test_support_edits_an_email_and_cannot_delete_or_export(new_page):
    page = new_page()
    login(page, "support")
    page.goto("/admin/patient/?search=Villalobos")
    screenshot(page, "list-patients")
    assert page.locator("form[action*='/delete/']").count() == 0
    assert page.get_by_text("Export").count() == 0
    page.click("table.model-list a[href*='/edit/']")
    page.fill("#email", "jose.villalobos@ejemplo.com")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url("**/admin/patient/**")
    assert page.locator(".alert-success").count() == 1
    page.goto("/admin/patient/?search=Villalobos")
    assert "jose.villalobos@ejemplo.com" in page.locator("table.model-list").inner_text()
    response = page.request.get("/admin/patient/export/csv/")
    assert response.status == 403


def test_admin_creates_a_user_who_is_then_deactivated(new_page):
    admin = new_page()
    login(admin, "admin")
    admin.goto("/admin/user/new/")
    admin.fill("#email", "nuevo.operador@backoffice.example.com")
    admin.fill("#display_name", "Nuevo Operador")
    admin.locator("label:has-text('Operator')").click()
    admin.fill("#new_password", "una frase larga y segura")
    admin.click("input[type=submit][value='Save']")
    admin.wait_for_url("**/admin/user/**")
    assert admin.locator(".alert-success").count() == 1

    user = new_page()
    login(user, "nuevo.operador@backoffice.example.com", password="una frase larga y segura")
    user.goto("/admin/patient/")
    assert user.locator("table.model-list").is_visible()

    admin.goto("/admin/user/?search=nuevo.operador")
    admin.click("table.model-list a[href*='/edit/']")
    admin.uncheck("#active")
    admin.click("input[type=submit][value='Save']")
    admin.wait_for_url("**/admin/user/**")
    screenshot(admin, "list-users")

    user.goto("/admin/patient/")
    user.wait_for_url("**/login**")
    assert user.locator("#login-form").is_visible()
