"""The bill-pay page (web/bill-pay/) in a real browser: headless Chromium from Debian's packages
(`make browser` installs chromium and chromium-driver), driven through /usr/bin/chromedriver by
selenium, against the local stack: the page is served by the stack's static server and calls the
APIs on the local gateway (another origin, so CORS is exercised, preflight included).

Look up a bill, pay it with a wrong amount (the error list shows), then with the right amount
(the confirmation shows, and the page follows the bill until the workflow has paid it).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from decimal import Decimal

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromium-driver are not installed: run `make browser` (make test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="payment3-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_look_up_pay_with_a_wrong_amount_then_pay(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    invoice = random.randint(10**8, 9 * 10**8) * 1000
    stack.boto("dynamodb").put_item(TableName=stack.table("payment-balance"), Item={
        "InvoiceID": {"N": str(invoice)}, "CustomerName": {"S": "Browser Tester"},
        "Balance": {"N": "640.25"}, "IsProcessed": {"N": "0"}})
    address = f"browser-{invoice}@example.com"
    number = "+6689" + str(invoice)[-7:]

    wait = WebDriverWait(browser, 60)
    browser.get(stack.bill_pay_url())
    browser.find_element(By.ID, "InvoiceID").send_keys(str(invoice))
    browser.find_element(By.ID, "getBalanceButton").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "bill-customer"), "Browser Tester"))
    assert browser.find_element(By.ID, "bill-balance").text == "640.25"
    assert browser.find_element(By.ID, "BillingAmount").get_attribute("value") == "640.25"

    amount = browser.find_element(By.ID, "BillingAmount")
    amount.clear()
    amount.send_keys("600")
    browser.find_element(By.ID, "CardNumber").send_keys("4242 4242 4242 4242")
    browser.find_element(By.ID, "ExpiryDate").send_keys("12/30")
    browser.find_element(By.ID, "EmailId").send_keys(address)
    browser.find_element(By.ID, "TextChoice").click()
    browser.find_element(By.ID, "PhnNumber").send_keys(number)
    browser.find_element(By.ID, "postPaymentButton").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "error-msg"), "not the balance due"))
    fields = [li.get_attribute("data-field") for li in browser.find_elements(By.CSS_SELECTOR, "#error-msg li")]
    assert fields == ["BillingAmount"]
    item = stack.get("payment-balance", InvoiceID=Decimal(invoice))
    assert item["IsProcessed"] == 0

    amount.clear()
    amount.send_keys("640.25")
    browser.find_element(By.ID, "postPaymentButton").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "success-msg"), "card ending 4242"))
    wait.until(EC.text_to_be_present_in_element((By.ID, "success-msg"), "Payment confirmed"))
    assert browser.find_element(By.ID, "error-msg").text == ""
    assert browser.find_element(By.ID, "bill-status").text.startswith("Paid")
    item = stack.get("payment-balance", InvoiceID=Decimal(invoice))
    assert (item["Balance"], item["IsProcessed"]) == (0, 1)
    assert len([m for m in stack.sent_emails() if address in str(m.get("destinations"))]) == 1
    assert len([m for m in stack.sent_sms() if m.get("phone_number") == number]) == 1
