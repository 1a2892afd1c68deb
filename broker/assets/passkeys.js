// sallyport console: passkeys (WebAuthn). Login with password + passkey on the login page, and
// adding a passkey on the account page. Without JavaScript or passkey support the pages keep
// working with password + code; nothing here runs inline (the CSP allows only this file).
"use strict";
(function () {
  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }
  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) {
          var msg = (j && j.error && j.error.message) || ("the broker answered " + r.status);
          throw new Error(msg);
        }
        return j;
      });
    });
  }
  // A credential as the broker reads it: its ids and type, and `response` (its fields in
  // base64url).
  function credentialJson(cred, response) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      response: response,
      extensions: {}
    };
  }
  function withIds(list) {
    return (list || []).map(function (c) {
      var o = Object.assign({}, c);
      o.id = b64urlToBuf(c.id);
      return o;
    });
  }
  function browserError(e) {
    if (e && e.name === "NotAllowedError") {
      return "The passkey was not used (cancelled, timed out, or not one registered here). Try again, or use the code from your authenticator app.";
    }
    return e && e.message ? e.message : String(e);
  }
  var supported = !!(window.PublicKeyCredential && navigator.credentials && window.fetch);
  // Exposed for the browser tests, which replay these steps with chosen inputs.
  window.sallyportPasskeys = { b64urlToBuf: b64urlToBuf, bufToB64url: bufToB64url, post: post };

  // --- Login: password, then the passkey instead of the code.
  var loginButton = document.getElementById("passkey-login");
  if (loginButton && supported) {
    var box = document.getElementById("passkey-login-box");
    var err = document.getElementById("passkey-login-error");
    box.hidden = false;
    loginButton.addEventListener("click", function () {
      var form = document.getElementById("login-form");
      var user = form.elements.user.value.trim(), password = form.elements.password.value;
      var nonce = form.elements.nonce.value;
      err.hidden = true;
      if (!user || !password) {
        err.textContent = "Type your user name and password first, then use your passkey.";
        err.hidden = false;
        (user ? form.elements.password : form.elements.user).focus();
        return;
      }
      loginButton.disabled = true;
      post("/console/login/passkey/start", { user: user, password: password, nonce: nonce })
        .then(function (start) {
          var pk = start.publicKey;
          pk.challenge = b64urlToBuf(pk.challenge);
          pk.allowCredentials = withIds(pk.allowCredentials);
          return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
            return post("/console/login/passkey/finish", {
              user: user,
              nonce: nonce,
              ceremony: start.ceremony,
              credential: credentialJson(cred, {
                authenticatorData: bufToB64url(cred.response.authenticatorData),
                clientDataJSON: bufToB64url(cred.response.clientDataJSON),
                signature: bufToB64url(cred.response.signature),
                userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null
              })
            });
          });
        })
        .then(function (done) { window.location.assign(done.redirect || "/console/"); })
        .catch(function (e) {
          err.textContent = browserError(e);
          err.hidden = false;
          loginButton.disabled = false;
        });
    });
  }

  // --- Account page: add a passkey.
  var reg = document.getElementById("passkey-register");
  if (reg) {
    var add = document.getElementById("passkey-add");
    var regErr = document.getElementById("passkey-error");
    var status = document.getElementById("passkey-status");
    var note = document.getElementById("passkey-needs-js");
    if (supported) {
      add.disabled = false;
      note.hidden = true;
    } else {
      note.textContent = "This browser cannot use passkeys.";
    }
    reg.addEventListener("submit", function (ev) {
      ev.preventDefault();
      regErr.hidden = true;
      status.textContent = "Use your passkey when the browser asks…";
      add.disabled = true;
      var csrf = reg.elements.csrf.value;
      post("/console/account/passkeys/start", {
        csrf: csrf,
        name: reg.elements.name.value.trim(),
        password: reg.elements.password.value
      })
        .then(function (start) {
          var pk = start.publicKey;
          pk.challenge = b64urlToBuf(pk.challenge);
          pk.user.id = b64urlToBuf(pk.user.id);
          pk.excludeCredentials = withIds(pk.excludeCredentials);
          return navigator.credentials.create({ publicKey: pk }).then(function (cred) {
            return post("/console/account/passkeys/finish", {
              csrf: csrf,
              ceremony: start.ceremony,
              credential: credentialJson(cred, {
                attestationObject: bufToB64url(cred.response.attestationObject),
                clientDataJSON: bufToB64url(cred.response.clientDataJSON)
              })
            });
          });
        })
        .then(function () { window.location.assign("/console/account"); })
        .catch(function (e) {
          status.textContent = "";
          regErr.textContent = "Not added: " + browserError(e);
          regErr.hidden = false;
          add.disabled = false;
        });
    });
  }
})();
