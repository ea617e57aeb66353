"""Login is required for every admin page, and the user comes back to the page they asked for."""

import pytest

from backoffice.models import RoleName
from tests.conftest import PASSWORD, csrf_token_from, make_user


@pytest.mark.parametrize("url", ["/admin/", "/admin/clinic/", "/admin/patient/new/"])
def test_anonymous_user_is_sent_to_login_and_back(client, url):
    make_user("back@test.example.com", RoleName.ADMIN)
    response = client.get(url)
    assert response.status_code == 302
    login_url = response.headers["Location"]
    assert login_url.startswith("/login?next=")
    page = client.get(login_url)
    token = csrf_token_from(page.get_data(as_text=True))
    assert f'value="{url}"' in page.get_data(as_text=True)
    done = client.post(
        "/login",
        data={
            "email": "back@test.example.com",
            "password": PASSWORD,
            "next": url,
            "csrf_token": token,
        },
    )
    assert done.status_code == 302
    assert done.headers["Location"] == url
    assert client.get(url).status_code == 200
