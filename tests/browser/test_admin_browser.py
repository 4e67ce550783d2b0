"""The admin in headless Chromium: log in, sync selected users, see them synced in ContactSync."""

import pytest

from .conftest import API_KEY, wait_until

pytestmark = pytest.mark.browser

WAIT = 30


def log_in(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(site.password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(
        lambda: (
            browser.current_url.endswith("/admin/")
            and browser.execute_script("return document.readyState") == "complete"
        ),
        "the admin index after login",
        WAIT,
    )


def visit(browser, url, selector):
    """Open ``url`` and wait for ``selector`` on it. Once, on a loaded machine, the
    navigation right after the login never reached the server: ask again if need be."""
    from selenium.webdriver.common.by import By

    browser.get(url)

    def shown():
        if not browser.current_url.endswith(url.split("://", 1)[1].split("/", 1)[1]):
            browser.get(url)
        return browser.find_elements(By.CSS_SELECTOR, selector)

    return wait_until(shown, f"{selector} on {url}", WAIT)[0]


def success_message(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return (
        WebDriverWait(browser, WAIT)
        .until(ec.visibility_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
        .text
    )


def contactsync_statuses(browser, site):
    """{username: status} as the ContactSync changelist shows them (after a reload)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/admin/django_orq_contacts/contactsync/")
    statuses = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"):
        user = row.find_element(By.CSS_SELECTOR, "td.field-user").text
        statuses[user] = row.find_element(By.CSS_SELECTOR, "td.field-status").text
    return statuses


def test_sync_selected_users_from_the_admin(browser, example_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = example_site
    chosen = ["alice", "bob"]
    log_in(browser, site)

    browser.get(f"{site.url}/admin/auth/user/")
    for username in chosen:
        box = browser.find_element(
            By.CSS_SELECTOR, f"input.action-select[value='{site.users[username]}']"
        )
        box.click()
        assert box.is_selected()
    Select(browser.find_element(By.NAME, "action")).select_by_visible_text(
        "Sync selected users to Orq"
    )
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    assert success_message(browser) == "2 users were queued for sync to Orq."
    browser.save_screenshot(str(site.logs / "user-changelist-after-action.png"))

    # The worker syncs them in the background: reload ContactSync until it says so.
    expected = {username: "synced" for username in chosen}
    wait_until(
        lambda: contactsync_statuses(browser, site) == expected,
        f"ContactSync to list {expected}",
        WAIT,
    )
    screenshot = site.logs / "contactsync-synced.png"
    assert browser.save_screenshot(str(screenshot))
    assert API_KEY not in browser.page_source

    # What Orq received: exactly the two selected users, nobody else.
    received = {c["external_id"]: c for c in site.orq.contacts()}
    assert set(received) == {str(site.users[u]) for u in chosen}
    assert received[str(site.users["alice"])]["email"] == "alice@example.com"

    # The user changelist's status column and filter agree.
    browser.get(f"{site.url}/admin/auth/user/?orq_sync=synced")
    shown = {
        cell.text
        for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list th.field-username")
    }
    assert shown == set(chosen)
    browser.get(f"{site.url}/admin/auth/user/?orq_sync=never")
    never = {
        cell.text
        for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list th.field-username")
    }
    assert never == {"admin", "carol"}


def test_sync_now_button_on_the_change_page(browser, example_site):
    from selenium.webdriver.common.by import By

    site = example_site
    carol = str(site.users["carol"])
    log_in(browser, site)
    page = f"{site.url}/admin/auth/user/{carol}/change/"
    assert "Never sent to Orq." in visit(browser, page, ".field-orq_contact_state").text
    browser.find_element(By.XPATH, "//form[@class='orq-sync-now']//button").click()
    assert success_message(browser) == "Carol was queued for sync to Orq."
    assert browser.current_url.endswith(f"/admin/auth/user/{carol}/change/")
    wait_until(lambda: site.orq.contact(carol), "Orq to receive carol", WAIT)

    def state_says_synced():
        browser.refresh()
        return "synced" in browser.find_element(By.CSS_SELECTOR, ".field-orq_contact_state").text

    wait_until(state_says_synced, "carol's change page to show the contact synced", WAIT)
    state = browser.find_element(By.CSS_SELECTOR, ".field-orq_contact_state")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", state)
    browser.save_screenshot(str(site.logs / "user-change-page.png"))
    assert API_KEY not in browser.page_source
