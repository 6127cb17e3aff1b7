// The bill-pay page: look up a bill (GET /paymentbalance/id?InvoiceID=), pay it
// (POST /paymentbalance), then follow the bill until it is paid. No build step, no libraries.
// The API base comes from ?api=<url> (the local stack prints it), window.BILL_PAY_API, or this origin.
'use strict';

var API = (new URLSearchParams(location.search).get('api') || window.BILL_PAY_API || '').replace(/\/$/, '');
var $ = function (id) { return document.getElementById(id); };
var paymentRef = null; // one reference per bill shown: a double submit names the same workflow run

function newRef() {
  var bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return 'web' + Array.from(bytes, function (b) { return b.toString(16).padStart(2, '0'); }).join('');
}

function say(text) { $('success-msg').textContent = text; }

function fail(title, errors) {
  var box = $('error-msg');
  box.textContent = title;
  if (errors && errors.length) {
    var list = document.createElement('ul');
    errors.forEach(function (e) {
      var item = document.createElement('li');
      item.textContent = e.message;
      item.dataset.field = e.field || '';
      list.appendChild(item);
    });
    box.appendChild(list);
  }
}

function clear() { say(''); $('error-msg').textContent = ''; }

function getJson(url, options) {
  return fetch(url, options).then(function (resp) {
    return resp.text().then(function (text) {
      var body = {};
      try { body = text ? JSON.parse(text) : {}; } catch (e) { body = { message: text }; }
      return { status: resp.status, body: body };
    });
  });
}

function showBill(item) {
  $('bill').hidden = false;
  $('bill-invoice').textContent = item.InvoiceID;
  $('bill-customer').textContent = item.CustomerName;
  $('bill-balance').textContent = item.Balance;
  var paid = Number(item.IsProcessed) === 1;
  $('bill-status').textContent = paid ? 'Paid' + (item.PaidAt ? ' on ' + item.PaidAt : '') : 'Due';
  $('pay-form').hidden = paid;
  if (!paid) { $('BillingAmount').value = item.Balance; }
}

function lookup(invoice) {
  return getJson(API + '/paymentbalance/id?InvoiceID=' + encodeURIComponent(invoice), { method: 'GET', mode: 'cors' });
}

$('lookup-form').addEventListener('submit', function (event) {
  event.preventDefault();
  clear();
  $('bill').hidden = true;
  $('pay-form').hidden = true;
  var invoice = $('InvoiceID').value.trim();
  lookup(invoice).then(function (r) {
    if (r.status === 200) {
      paymentRef = newRef();
      showBill(r.body.Item);
      say(Number(r.body.Item.IsProcessed) === 1 ? 'This bill is paid.' : 'Please check your balance and pay it.');
    } else {
      fail(r.body.message || ('Could not find the bill (' + r.status + ').'));
    }
  }).catch(function (err) { fail('Could not reach the bill service: ' + err); });
});

function followUntilPaid(invoice, tries) {
  return lookup(invoice).then(function (r) {
    if (r.status === 200 && Number(r.body.Item.IsProcessed) === 1) {
      showBill(r.body.Item);
      say('Payment confirmed: invoice ' + invoice + ' is paid, balance ' + r.body.Item.Balance + '.');
      return;
    }
    if (tries <= 0) { say('Payment submitted; it is still being processed. Look the bill up again in a minute.'); return; }
    return new Promise(function (ok) { setTimeout(ok, 1000); }).then(function () { return followUntilPaid(invoice, tries - 1); });
  });
}

$('pay-form').addEventListener('submit', function (event) {
  event.preventDefault();
  clear();
  var email = $('EmailChoice').checked, text = $('TextChoice').checked;
  var choices = email && text ? 'both' : email ? 'email' : text ? 'text' : '';
  var invoice = $('InvoiceID').value.trim();
  var button = $('postPaymentButton');
  button.disabled = true;
  getJson(API + '/paymentbalance', {
    method: 'POST',
    mode: 'cors',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      InvoiceID: invoice,
      BillersName: $('bill-customer').textContent,
      BillingAmount: $('BillingAmount').value.trim(),
      CardNumber: $('CardNumber').value,
      ExpiryDate: $('ExpiryDate').value.trim(),
      EmailId: $('EmailId').value.trim(),
      PhnNumber: $('PhnNumber').value.trim(),
      Choices: choices,
      WaitSeconds: $('WaitSeconds').value.trim(),
      PaymentRef: paymentRef
    })
  }).then(function (r) {
    if (r.status === 200) {
      $('CardNumber').value = '';
      say('Payment submitted (reference ' + r.body.PaymentRef + ', card ending ' + r.body.CardLast4 + '). Waiting for confirmation...');
      return followUntilPaid(invoice, 60);
    }
    if (r.status === 400) { fail('Please correct the following:', r.body.Errors || [{ message: r.body.message }]); return; }
    fail('The payment could not be submitted: ' + (r.body.message || r.status));
  }).catch(function (err) {
    fail('Could not reach the payment service: ' + err);
  }).then(function () { button.disabled = false; });
});
