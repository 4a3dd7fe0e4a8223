// The workspace forms' small behaviours: show the chosen mechanic's inputs, add and remove table rows and
// variants, and ask the server what the form means (live previews). Every control is a real button or
// input, so the forms work with the keyboard; the server checks everything again on submit.
(function () {
  "use strict";

  function renumber(tbody) {
    Array.prototype.forEach.call(tbody.rows, function (tr, r) {
      tr.querySelectorAll("[data-pattern]").forEach(function (input) {
        input.name = input.id = input.dataset.pattern.replace("{row}", r);
        input.setAttribute("aria-label", input.getAttribute("aria-label").replace(/row \d*$/, "row " + (r + 1)));
      });
    });
  }

  function showMechanic(select) {
    var box = select.closest(".variant");
    box.querySelectorAll("[data-mechanic]").forEach(function (div) {
      div.hidden = div.dataset.mechanic !== select.value;
    });
  }

  // a new variant or stage from its template, numbered after the highest on the page
  function addFrom(listId, templateId, placeholder, selector) {
    var list = document.getElementById(listId), tpl = document.getElementById(templateId), next = 0;
    list.querySelectorAll(selector).forEach(function (el) { next = Math.max(next, +el.dataset.index + 1); });
    var holder = document.createElement("div");
    holder.innerHTML = tpl.innerHTML.split(placeholder).join(String(next));
    var added = holder.firstElementChild;
    list.appendChild(added);
    added.querySelector("input").focus();
    return added;
  }

  // a new stage starts as a copy of the one before (weights, groups, gate), not of its scope, dates or name
  function copyStage(from, to) {
    var fromPrefix = "s-" + from.dataset.index + "-";
    to.querySelectorAll("input[name], select[name]").forEach(function (dst) {
      var rest = dst.name.replace(/^s-\d+-/, "");
      if (/^(region|store|start|end|name)$/.test(rest)) return;
      var selector = '[name="' + fromPrefix + rest + '"]' + (dst.type === "checkbox" ? '[value="' + dst.value + '"]' : "");
      var src = from.querySelector(selector);
      if (!src) return;
      if (dst.type === "checkbox") dst.checked = src.checked; else dst.value = src.value;
    });
    to.querySelectorAll("[data-leave-out]").forEach(leaveOut);
    sumWeights(to);
  }

  function numberStages() {
    document.querySelectorAll(".stage").forEach(function (el, i) {
      el.querySelector("legend").textContent = "Stage " + (i + 1);
    });
  }

  function sumWeights(box) {
    box.querySelectorAll("[data-weights]").forEach(function (set) {
      var total = 0;
      set.querySelectorAll("[data-weight]:not(:disabled)").forEach(function (w) { total += parseFloat(w.value.replace(",", ".")) || 0; });
      var out = set.querySelector("[data-total]"), ok = Math.abs(total - 100) < 1e-6;
      out.textContent = (Math.round(total * 1000) / 1000) + "%" + (ok ? " ✓" : " — must be 100%");
      out.className = ok ? "sum-ok" : "sum-bad";
    });
  }

  // a variant left out of a draft's stage: its weight is not typed and not counted
  function leaveOut(box) {
    var weight = box.closest("div.col-sm-3").querySelector("[data-weight]");
    weight.disabled = box.checked;
    sumWeights(box.closest(".stage"));
  }

  function unitChanged(radio) {
    var form = radio.form, store = radio.value === "store";
    form.querySelectorAll("[data-unit-word]").forEach(function (el) { el.textContent = store ? "stores" : "customers"; });
    var mine = form.dataset[store ? "storeUnits" : "customerUnits"], other = form.dataset[store ? "customerUnits" : "storeUnits"];
    form.querySelectorAll("[data-min-units]").forEach(function (el) { if (!el.value || el.value === other) el.value = mine; });
  }

  // one preview at a time; a submission cancels the one in flight, whose answer (and its session cookie)
  // would otherwise land after the submission's and drop the message the next page flashes
  var previewTimer = null, inFlight = null;
  function preview(form) {
    if (!form.dataset.preview) return;
    clearTimeout(previewTimer);
    previewTimer = setTimeout(function () {
      if (inFlight) inFlight.abort();
      inFlight = new AbortController();
      fetch(form.dataset.preview, {method: "POST", body: new FormData(form), credentials: "same-origin",
                                   signal: inFlight.signal})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (answer) { if (answer) render(form, answer); })
        .catch(function () {});
    }, 250);
  }

  function render(form, answer) {
    (answer.variants || []).forEach(function (v) {
      var out = form.querySelector('[data-preview-for="' + v.index + '"]');
      if (out) out.textContent = v.description || ("To fix: " + v.errors.map(function (e) { return e.message; }).join(" "));
    });
    (answer.outputs || []).forEach(function (o) {
      var out = form.querySelector(o.selector);
      if (out) out.textContent = o.text;
    });
    if (form.onpreview) form.onpreview(answer);
  }

  document.addEventListener("change", function (e) {
    if (e.target.matches("[data-mechanic-select]")) showMechanic(e.target);
    if (e.target.matches("[data-unit]")) unitChanged(e.target);
    if (e.target.matches("[data-leave-out]")) leaveOut(e.target);
  });

  document.addEventListener("click", function (e) {
    var t = e.target, form = t.closest("form");
    if (t.matches("[data-add-row]")) {
      var box = t.closest("[data-table]"), tbody = box.querySelector("tbody");
      tbody.appendChild(box.querySelector("template").content.cloneNode(true));
      renumber(tbody);
      tbody.rows[tbody.rows.length - 1].querySelector("input").focus();
    } else if (t.matches("[data-remove-row]")) {
      var body = t.closest("tbody");
      t.closest("tr").remove();
      renumber(body);
    } else if (t.matches("[data-add-variant]")) {
      addFrom("variants", "variant-template", "__v__", ".variant");
    } else if (t.matches("[data-remove-variant]")) {
      t.closest(".variant").remove();
    } else if (t.matches("[data-add-stage]")) {
      var stage = addFrom("stages", "stage-template", "__s__", ".stage"), stages = document.querySelectorAll(".stage");
      if (stages.length > 1) copyStage(stages[stages.length - 2], stage);
      numberStages();
    } else if (t.matches("[data-remove-stage]")) {
      t.closest(".stage").remove();
      numberStages();
    } else {
      return;
    }
    if (form) preview(form);
  });

  document.addEventListener("input", function (e) {
    if (e.target.matches("[data-weight]")) sumWeights(e.target.closest(".stage") || document);
    var form = e.target.closest("form[data-preview]");
    if (form) preview(form);
  });
  document.addEventListener("change", function (e) {
    var form = e.target.closest("form[data-preview]");
    if (form) preview(form);
  });

  document.addEventListener("submit", function () {
    clearTimeout(previewTimer);
    if (inFlight) inFlight.abort();
  });

  document.querySelectorAll("form[data-preview]").forEach(preview);
  sumWeights(document);
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
  window.pilotWorkspace = {preview: preview};
})();
