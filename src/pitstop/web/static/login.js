// Login page: carry `next` through the form, and say why we are here when the server sent us back.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/";
  // only a path on this site: never //host or a scheme
  document.getElementById("next").value = /^\/(?![/\\])/.test(next) ? next : "/";
  const MESSAGES = {
    invalid: "Invalid username or password",
    rate_limited: "Too many attempts; try again later",
    expired: "Your session ended; log in again",
    expired_link: "This login link has expired or was already used; log in with your password",
  };
  const error = params.get("error");
  if (error) document.getElementById("login-error").textContent = MESSAGES[error] || "Could not log you in; try again";
  const user = params.get("username");
  if (user) {
    document.getElementById("username").value = user;
    document.getElementById("password").focus();
  }
})();
