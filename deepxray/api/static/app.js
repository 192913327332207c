// DeepXRay review page: score a film, review each joint's grade, keep the review with the case.
// Plain JavaScript, no framework and nothing loaded from elsewhere: every call goes to this service, with the
// token of the field as "Authorization: Bearer <token>" (the token stays in this tab's sessionStorage).
"use strict";

(() => {
  const TOKEN_KEY = "deepxray.token";
  const JOINTS = ["mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip1", "pip2", "pip3", "pip4", "pip5"];
  const GRADES = [0, 1, 2, 3, 4, 5];
  const HAND_NAMES = { L: "left hand", R: "right hand" };
  const ERROR_TITLES = {
    400: "The film could not be read",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    413: "The film is too large",
    415: "Not a format the service reads",
    422: "Not scored",
    503: "The service is busy",
    504: "The models did not answer in time",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    token: $("token"),
    forgetToken: $("forget-token"),
    authMessage: $("auth-message"),
    film: $("film"),
    scoreForm: $("score-form"),
    scoreButton: $("score-button"),
    progress: $("progress"),
    message: $("message"),
    empty: $("empty"),
    case: $("case"),
    caseHeading: $("case-heading"),
    caseMeta: $("case-meta"),
    bodyPart: $("body-part"),
    totalModel: $("total-model"),
    totalReviewed: $("total-reviewed"),
    reviewState: $("review-state"),
    warnings: $("warnings"),
    overlay: $("overlay"),
    overlayCaption: $("overlay-caption"),
    overlayFull: $("overlay-full"),
    rows: $("joint-rows"),
    save: $("save-review"),
    saveStatus: $("save-status"),
    history: $("history"),
    historyEmpty: $("history-empty"),
    casesHeading: $("cases-heading"),
    showAll: $("show-all"),
    refreshCases: $("refresh-cases"),
    casesMessage: $("cases-message"),
    caseList: $("case-list"),
    similar: $("similar"),
    similarHeading: $("similar-heading"),
    closeSimilar: $("close-similar"),
    similarQuery: $("similar-query"),
    similarShare: $("similar-share"),
    similarList: $("similar-list"),
    similarMethod: $("similar-method"),
  };

  // What is shown: the case id (null: the service keeps no cases), the answer's hands and one row per joint.
  const state = { caseId: null, hands: [], rows: [], overlayUrl: null, loading: 0 };

  // ---------------------------------------------------------------- the API

  class ApiFailure extends Error {
    constructor(status, body, retryAfter) {
      const detail = (body && body.detail) || (status ? `The service answered ${status}.` : "The service did not answer.");
      super(detail);
      this.status = status;
      this.code = (body && body.error) || null;
      this.detail = detail;
      this.requestId = (body && body.request_id) || null;
      this.retryAfter = retryAfter;
    }
  }

  function headers() {
    const token = el.token.value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // fetch with the token; JSON (or a Blob with `blob: true`) back, or an ApiFailure thrown.
  async function api(path, { method = "GET", body, json, blob = false } = {}) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiFailure(0, { detail: `The service did not answer (${error.message}).` });
    }
    if (!response.ok) {
      let answer = null;
      try {
        answer = await response.json();
      } catch (_) {
        answer = null;
      }
      const failure = new ApiFailure(response.status, answer, response.headers.get("Retry-After"));
      if (failure.status === 401 || failure.status === 403) showAuth(failure);
      throw failure;
    }
    clearAuth();
    return blob ? response.blob() : response.json();
  }

  // ---------------------------------------------------------------- messages

  function showAuth(failure) {
    const what = failure.status === 401 ? "401 Unauthorized" : "403 Forbidden";
    el.authMessage.textContent = `${what}: ${failure.detail}`;
    el.authMessage.hidden = false;
    el.token.setAttribute("aria-invalid", "true");
  }

  function clearAuth() {
    el.authMessage.hidden = true;
    el.authMessage.textContent = "";
    el.token.removeAttribute("aria-invalid");
  }

  function showError(failure, context) {
    el.message.replaceChildren();
    const title = document.createElement("strong");
    const status = failure.status ? `${failure.status} ` : "";
    title.textContent = `${context}: ${status}${ERROR_TITLES[failure.status] || "failed"}`;
    const detail = document.createElement("p");
    detail.className = "detail";
    detail.textContent = failure.detail;
    el.message.append(title, detail);
    if (failure.status === 401 || failure.status === 403) {
      const hint = document.createElement("p");
      hint.textContent = "Check the token field above.";
      el.message.append(hint);
    }
    if (failure.retryAfter) {
      const hint = document.createElement("p");
      hint.textContent = `Try again in ${failure.retryAfter} s.`;
      el.message.append(hint);
    }
    if (failure.code || failure.requestId) {
      const ids = document.createElement("p");
      ids.className = "ids";
      ids.textContent = [failure.code && `error ${failure.code}`, failure.requestId && `request ${failure.requestId}`]
        .filter(Boolean)
        .join(" · ");
      el.message.append(ids);
    }
    el.message.dataset.kind = "error";
    el.message.hidden = false;
  }

  function showNote(text) {
    el.message.replaceChildren(document.createTextNode(text));
    el.message.dataset.kind = "note";
    el.message.hidden = false;
  }

  function clearMessage() {
    el.message.hidden = true;
    el.message.replaceChildren();
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n) => String(n).padStart(2, "0");

  function when(iso, seconds = false) {
    if (!iso) return "";
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return String(iso);
    const day = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
    const time = `${pad(t.getHours())}:${pad(t.getMinutes())}${seconds ? `:${pad(t.getSeconds())}` : ""}`;
    return `${day} ${time}`;
  }

  function bodyPartText(part) {
    if (!part) return "—";
    const label = typeof part === "string" ? part : part.label;
    const text = String(label || "—").replace(/_/g, " ");
    const name = text.charAt(0).toUpperCase() + text.slice(1);
    return typeof part === "object" && typeof part.probability === "number"
      ? `${name} (p ${part.probability.toFixed(2)})`
      : name;
  }

  const jointName = (joint) => joint.toUpperCase();

  function scorerVersion(models) {
    if (!models) return "";
    return models.ratingen_score || Object.values(models)[0] || "";
  }

  function handLabel(row) {
    return state.hands.length > 1 ? `${row.laterality} ${jointName(row.joint)}` : jointName(row.joint);
  }

  // ---------------------------------------------------------------- the case on screen

  // Rows from a /score answer's hands (no reviews yet) or a case's joints (reviews, confidence from its answer).
  function rowsFromAnswer(answer) {
    const rows = [];
    (answer.hands || []).forEach((hand, index) => {
      const names = JOINTS.filter((j) => hand.joints && hand.joints[j]);
      for (const joint of names) {
        const j = hand.joints[joint];
        rows.push({
          hand: index,
          laterality: hand.laterality,
          joint,
          score: j.score,
          probabilities: j.probabilities,
          confidence: j.confidence,
          review: null,
        });
      }
    });
    return rows;
  }

  function rowsFromCase(record) {
    const answer = record.answer || {};
    if (!record.joints || !record.joints.length) return rowsFromAnswer(answer);
    const rows = record.joints.map((j) => {
      const hand = (answer.hands || [])[j.hand];
      const scored = hand && hand.joints ? hand.joints[j.joint] : null;
      return {
        hand: j.hand,
        laterality: j.laterality || (hand && hand.laterality) || "",
        joint: j.joint,
        score: j.score,
        probabilities: j.probabilities || (scored && scored.probabilities) || [],
        confidence: scored ? scored.confidence : null,
        review: j.review || null,
      };
    });
    rows.sort((a, b) => a.hand - b.hand || JOINTS.indexOf(a.joint) - JOINTS.indexOf(b.joint));
    return rows;
  }

  function probabilityChart(probabilities) {
    const chart = document.createElement("div");
    chart.className = "probs";
    const top = probabilities.indexOf(Math.max(...probabilities));
    chart.setAttribute("role", "img");
    chart.setAttribute(
      "aria-label",
      "Probabilities " + probabilities.map((p, grade) => `${grade}: ${p.toFixed(2)}`).join(", "),
    );
    chart.title = probabilities.map((p, grade) => `${grade}: ${p.toFixed(3)}`).join("\n");
    probabilities.forEach((p, grade) => {
      const column = document.createElement("span");
      column.className = grade === top ? "bar top" : "bar";
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.height = `${Math.max(3, Math.round(p * 100))}%`;
      track.append(fill);
      const label = document.createElement("span");
      label.className = "grade";
      label.textContent = String(grade);
      column.append(track, label);
      chart.append(column);
    });
    const value = document.createElement("span");
    value.className = "top-value";
    value.textContent = probabilities.length ? probabilities[top].toFixed(2) : "";
    chart.append(value);
    return chart;
  }

  function renderRows() {
    el.rows.replaceChildren();
    let previousHand = null;
    for (const row of state.rows) {
      const tr = document.createElement("tr");
      tr.dataset.hand = String(row.hand);
      tr.dataset.joint = row.joint;
      if (previousHand !== null && previousHand !== row.hand) tr.className = "hand-start";
      previousHand = row.hand;
      const name = `${HAND_NAMES[row.laterality] || "hand " + row.hand} ${jointName(row.joint)}`;

      const hand = document.createElement("td");
      hand.className = "hand";
      hand.textContent = row.laterality;
      hand.title = HAND_NAMES[row.laterality] || "";

      const joint = document.createElement("th");
      joint.scope = "row";
      joint.className = "joint";
      joint.textContent = jointName(row.joint);

      const model = document.createElement("td");
      model.className = "num model-score";
      model.textContent = String(row.score);

      const probs = document.createElement("td");
      probs.append(probabilityChart(row.probabilities || []));

      const confidence = document.createElement("td");
      confidence.className = "num confidence";
      confidence.textContent = typeof row.confidence === "number" ? row.confidence.toFixed(2) : "—";

      const reviewed = document.createElement("td");
      const select = document.createElement("select");
      select.className = "reviewed-score";
      select.setAttribute("aria-label", `Reviewed score, ${name}`);
      for (const grade of GRADES) {
        const option = document.createElement("option");
        option.value = String(grade);
        option.textContent = String(grade);
        select.append(option);
      }
      select.value = String(row.review ? row.review.score : row.score);
      select.addEventListener("change", () => markChanged(tr, row, select));
      reviewed.append(select);
      if (row.review) {
        select.dataset.decision = row.review.decision;
        select.title = `${row.review.decision} by ${row.review.reviewer || "?"}, ${when(row.review.at || row.review.reviewed_at)}`;
      }

      const comment = document.createElement("td");
      const input = document.createElement("input");
      input.type = "text";
      input.className = "comment";
      input.maxLength = 500;
      input.placeholder = "Comment";
      input.setAttribute("aria-label", `Comment, ${name}`);
      input.value = (row.review && row.review.comment) || "";
      comment.append(input);

      const similar = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "quiet small";
      button.textContent = "Similar";
      button.setAttribute("aria-label", `Similar to ${name}`);
      button.disabled = !state.caseId;
      button.addEventListener("click", () => showSimilar(row));
      similar.append(button);

      tr.append(hand, joint, model, probs, confidence, reviewed, comment, similar);
      markChanged(tr, row, select);
      el.rows.append(tr);
    }
    updateTotals();
  }

  function markChanged(tr, row, select) {
    tr.classList.toggle("changed", Number(select.value) !== row.score);
    updateTotals();
  }

  function updateTotals() {
    const byHand = new Map();
    for (const tr of el.rows.querySelectorAll("tr")) {
      const hand = Number(tr.dataset.hand);
      const row = state.rows.find((r) => r.hand === hand && r.joint === tr.dataset.joint);
      const totals = byHand.get(hand) || { model: 0, reviewed: 0, laterality: row ? row.laterality : "" };
      totals.model += row ? row.score : 0;
      totals.reviewed += Number(tr.querySelector("select").value);
      byHand.set(hand, totals);
    }
    const show = (key) =>
      [...byHand.values()].map((t) => (byHand.size > 1 ? `${t.laterality} ${t[key]}` : String(t[key]))).join(" · ") ||
      "—";
    el.totalModel.textContent = show("model");
    el.totalReviewed.textContent = show("reviewed");
  }

  // Whether the table holds a reviewed score or comment that is not saved yet.
  function unsaved() {
    if (!state.caseId) return false;
    return [...el.rows.querySelectorAll("tr")].some((tr) => {
      const row = state.rows.find((r) => r.hand === Number(tr.dataset.hand) && r.joint === tr.dataset.joint);
      if (!row) return false;
      const saved = row.review ? row.review.score : row.score;
      const comment = (row.review && row.review.comment) || "";
      return Number(tr.querySelector("select").value) !== saved || tr.querySelector("input.comment").value.trim() !== comment;
    });
  }

  function mayLeave() {
    return !unsaved() || window.confirm("The review of this case is not saved. Leave it anyway?");
  }

  // No case on screen; `keepHash`: the URL still names it (to open once the token lets it).
  function hideCase(keepHash = false) {
    state.caseId = null;
    state.rows = [];
    el.rows.replaceChildren();
    el.case.hidden = true;
    el.empty.hidden = false;
    setOverlay(null, "");
    if (location.hash && !keepHash) history.replaceState(null, "", location.pathname + location.search);
    highlightListed();
  }

  function renderWarnings(answer) {
    const items = [...(answer.warnings || [])];
    for (const hand of answer.hands_not_scored || []) items.push(`A hand was not scored: ${hand.detail}`);
    el.warnings.replaceChildren(
      ...items.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
    el.warnings.hidden = items.length === 0;
  }

  function showCase({ caseId, answer, createdAt, models, reviewed, reviewer, reviewedAt }) {
    state.caseId = caseId || null;
    state.hands = answer.hands || [];
    el.empty.hidden = true;
    el.case.hidden = false;
    el.caseHeading.textContent = caseId ? `Case ${caseId.slice(0, 8)}` : "Scored film (not kept)";
    el.caseHeading.title = caseId || "";
    const meta = [];
    if (createdAt) meta.push(`Scored ${when(createdAt)}`);
    const version = scorerVersion(models || answer.models);
    if (version) meta.push(`scorer ${version}`);
    if (answer.request_id) meta.push(`request ${answer.request_id}`);
    el.caseMeta.textContent = meta.join(" · ");
    el.bodyPart.textContent = bodyPartText(answer.body_part);
    el.reviewState.textContent = !caseId
      ? "not kept"
      : reviewed
        ? `reviewed${reviewer ? ` by ${reviewer}` : ""}${reviewedAt ? `, ${when(reviewedAt)}` : ""}`
        : "not reviewed";
    el.reviewState.dataset.reviewed = reviewed ? "true" : "false";
    renderWarnings(answer);
    renderRows();
    el.save.disabled = !caseId;
    highlightListed();
  }

  function renderHistory(history) {
    el.history.replaceChildren();
    const entries = [...(history || [])].sort((a, b) => String(b.at).localeCompare(String(a.at)));
    // One save reviews every joint: show the corrections and comments line by line, the plain acceptances of one
    // save as one line.
    const groups = [];
    for (const entry of entries) {
      const last = groups[groups.length - 1];
      const close = last && last.reviewer === entry.reviewer && Math.abs(new Date(last.at) - new Date(entry.at)) < 5000;
      if (close) last.entries.push(entry);
      else groups.push({ at: entry.at, reviewer: entry.reviewer, entries: [entry] });
    }
    let lines = 0;
    for (const group of groups) {
      if (lines >= 30) break;
      const accepted = [];
      for (const entry of group.entries) {
        const row = state.rows.find((r) => r.hand === entry.hand && r.joint === entry.joint);
        if (entry.decision === "accepted" && !entry.comment) {
          accepted.push(entry);
          continue;
        }
        const label = row ? handLabel(row) : jointName(entry.joint);
        const change =
          entry.decision === "corrected" && row ? `${row.score}→${entry.score}` : String(entry.score ?? "");
        let text = `${label} ${entry.decision} ${change}`;
        if (entry.comment) text += ` — ${entry.comment}`;
        el.history.append(historyLine(entry.at, entry.reviewer, text, entry.decision));
        lines += 1;
      }
      if (accepted.length) {
        const text =
          accepted.length === 1
            ? `${jointName(accepted[0].joint)} accepted ${accepted[0].score}`
            : `${accepted.length} joints accepted`;
        el.history.append(historyLine(group.at, group.reviewer, text, "accepted"));
        lines += 1;
      }
    }
    el.historyEmpty.hidden = entries.length > 0;
  }

  function historyLine(at, reviewer, text, decision) {
    const li = document.createElement("li");
    li.className = decision;
    const time = document.createElement("time");
    time.dateTime = at || "";
    time.textContent = when(at);
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = `${reviewer || "unknown"}:`;
    li.append(time, " ", who, " ", text);
    return li;
  }

  function setOverlay(blob, caption) {
    if (state.overlayUrl) URL.revokeObjectURL(state.overlayUrl);
    state.overlayUrl = blob ? URL.createObjectURL(blob) : null;
    if (state.overlayUrl) {
      el.overlay.src = state.overlayUrl;
      el.overlay.hidden = false;
      el.overlayFull.href = state.overlayUrl;
      el.overlayFull.hidden = false;
    } else {
      el.overlay.removeAttribute("src");
      el.overlay.hidden = true;
      el.overlayFull.hidden = true;
    }
    el.overlayCaption.textContent = caption;
  }

  function base64Blob(base64, type) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  // ---------------------------------------------------------------- score a film

  async function scoreFilm(event) {
    event.preventDefault();
    const file = el.film.files && el.film.files[0];
    if (!file) {
      showNote("Choose a film first.");
      el.film.focus();
      return;
    }
    if (!mayLeave()) return;
    clearMessage();
    el.saveStatus.textContent = "";
    el.scoreButton.disabled = true;
    el.progress.textContent = "Scoring…";
    el.progress.dataset.busy = "true";
    const started = performance.now();
    const form = new FormData();
    form.append("xray", file, file.name);
    try {
      const answer = await api("/score?overlay=true", { method: "POST", body: form });
      el.progress.textContent = `Scored in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
      state.loading += 1; // a case still opening does not replace this one
      state.rows = rowsFromAnswer(answer);
      showCase({ caseId: answer.case_id, answer, models: answer.models, reviewed: false });
      renderHistory([]);
      setOverlay(
        answer.overlay ? base64Blob(answer.overlay.base64, answer.overlay.media_type || "image/png") : null,
        answer.overlay ? "Joint boxes and model scores." : "No overlay in the answer.",
      );
      if (answer.case_id) {
        if (location.hash !== `#case=${answer.case_id}`) location.hash = `case=${answer.case_id}`;
        loadCaseList();
      } else {
        history.replaceState(null, "", location.pathname + location.search);
        showNote("This service does not keep cases: the scores are shown, but a review cannot be saved.");
      }
    } catch (failure) {
      el.progress.textContent = "";
      // No scores of an earlier film beside the error of this one.
      state.loading += 1;
      hideCase();
      showError(failure, "Scoring");
    } finally {
      el.scoreButton.disabled = false;
      delete el.progress.dataset.busy;
    }
  }

  // ---------------------------------------------------------------- open a case

  function caseFromHash() {
    const match = /^#case=([A-Za-z0-9_-]+)$/.exec(location.hash);
    return match ? match[1] : null;
  }

  function renderCaseRecord(record) {
    state.rows = rowsFromCase(record);
    showCase({
      caseId: record.case_id,
      answer: record.answer || {},
      createdAt: record.created_at,
      models: record.models,
      reviewed: record.reviewed,
      reviewer: record.reviewer,
      reviewedAt: record.reviewed_at,
    });
    renderHistory(record.history);
  }

  async function loadOverlay(caseId) {
    try {
      const blob = await api(`/v1/cases/${encodeURIComponent(caseId)}/overlay.png`, { blob: true });
      if (state.caseId === caseId) setOverlay(blob, "Joint boxes with model and reviewed scores.");
    } catch (failure) {
      if (state.caseId !== caseId) return;
      setOverlay(null, failure.code === "no_image" ? "This case was kept without a picture." : failure.detail);
    }
  }

  async function openCase(caseId) {
    const ticket = ++state.loading;
    clearMessage();
    el.saveStatus.textContent = "";
    el.progress.textContent = "Opening the case…";
    try {
      const record = await api(`/v1/cases/${encodeURIComponent(caseId)}`);
      if (ticket !== state.loading) return;
      el.progress.textContent = "";
      setOverlay(null, "Loading the picture…");
      renderCaseRecord(record);
      await loadOverlay(record.case_id);
    } catch (failure) {
      if (ticket !== state.loading) return;
      el.progress.textContent = "";
      hideCase(failure.status === 401 || failure.status === 403);
      showError(failure, "Opening the case");
    }
  }

  function onHash() {
    const caseId = caseFromHash();
    if (!caseId || caseId === state.caseId) return;
    if (!mayLeave()) {
      history.replaceState(null, "", `#case=${state.caseId}`);
      return;
    }
    openCase(caseId);
  }

  // ---------------------------------------------------------------- save the review

  async function saveReview() {
    if (!state.caseId) return;
    const joints = [];
    for (const tr of el.rows.querySelectorAll("tr")) {
      const hand = Number(tr.dataset.hand);
      const row = state.rows.find((r) => r.hand === hand && r.joint === tr.dataset.joint);
      const score = Number(tr.querySelector("select").value);
      const comment = tr.querySelector("input.comment").value.trim();
      joints.push({
        hand,
        joint: row.joint,
        decision: score === row.score ? "accepted" : "corrected",
        score,
        comment: comment || null,
      });
    }
    const caseId = state.caseId;
    el.save.disabled = true;
    el.saveStatus.textContent = "Saving…";
    el.saveStatus.dataset.kind = "busy";
    clearMessage();
    try {
      const record = await api(`/v1/cases/${encodeURIComponent(caseId)}/review`, { method: "PUT", json: { joints } });
      const saved = new Date();
      renderCaseRecord(record);
      el.saveStatus.textContent = `Review saved at ${pad(saved.getHours())}:${pad(saved.getMinutes())}:${pad(saved.getSeconds())}`;
      el.saveStatus.dataset.kind = "saved";
      loadOverlay(caseId);
      loadCaseList();
    } catch (failure) {
      el.saveStatus.textContent = "";
      showError(failure, "Saving the review");
    } finally {
      el.save.disabled = !state.caseId;
    }
  }

  // ---------------------------------------------------------------- the list of cases

  async function loadCaseList() {
    const all = el.showAll.checked;
    el.casesHeading.textContent = all ? "All cases" : "Unreviewed cases";
    const query = all ? "limit=20" : "reviewed=false&limit=20";
    try {
      const answer = await api(`/v1/cases?${query}`);
      const cases = answer.cases || [];
      el.caseList.replaceChildren(...cases.map(caseItem));
      const total = typeof answer.total === "number" ? answer.total : cases.length;
      el.casesMessage.textContent =
        total === 0
          ? all
            ? "No cases yet."
            : "Every case is reviewed."
          : total > cases.length
            ? `${cases.length} of ${total} shown (newest first).`
            : `${total} ${total === 1 ? "case" : "cases"}.`;
      highlightListed();
    } catch (failure) {
      el.caseList.replaceChildren();
      el.casesMessage.textContent =
        failure.code === "cases_not_kept"
          ? "This service does not keep cases."
          : failure.status === 401 || failure.status === 403
            ? "Enter a token with the read scope to list cases."
            : `The list could not be loaded: ${failure.detail}`;
    }
  }

  function caseItem(item) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = `#case=${item.case_id}`;
    link.className = "case-link";
    link.dataset.case = item.case_id;
    const time = document.createElement("span");
    time.className = "case-time";
    time.textContent = when(item.created_at);
    const part = document.createElement("span");
    part.className = "case-part";
    part.textContent = bodyPartText(typeof item.body_part === "object" ? item.body_part?.label : item.body_part);
    const total = document.createElement("span");
    total.className = "case-total";
    total.textContent = `total ${Array.isArray(item.total) ? item.total.join(" · ") : (item.total ?? "—")}`;
    const version = document.createElement("span");
    version.className = "case-version";
    version.textContent = scorerVersion(item.models);
    link.append(time, total, part, version);
    if (item.reviewed) {
      const who = document.createElement("span");
      who.className = "case-reviewed";
      who.textContent = `reviewed${item.reviewer ? ` by ${item.reviewer}` : ""}`;
      link.append(who);
    }
    link.setAttribute(
      "aria-label",
      `Case of ${when(item.created_at)}, ${part.textContent}, ${total.textContent}, ${version.textContent}`,
    );
    li.append(link);
    return li;
  }

  function highlightListed() {
    for (const link of el.caseList.querySelectorAll("a.case-link")) {
      if (link.dataset.case === state.caseId) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    }
  }

  // ---------------------------------------------------------------- similar joints

  async function showSimilar(row) {
    if (!state.caseId) return;
    const caseId = state.caseId;
    el.similar.hidden = false;
    el.similarHeading.textContent = `Similar to ${handLabel(row)}`;
    el.similarQuery.textContent =
      `Case ${caseId.slice(0, 8)}, ${HAND_NAMES[row.laterality] || "hand " + row.hand} ${jointName(row.joint)},` +
      ` model score ${row.score}`;
    el.similarShare.textContent = "Searching…";
    el.similarList.replaceChildren();
    el.similarMethod.textContent = "";
    const query = `hand=${row.hand}&joint=${encodeURIComponent(row.joint)}&k=8`;
    try {
      const answer = await api(`/v1/cases/${encodeURIComponent(caseId)}/similar?${query}`);
      const neighbours = answer.similar || [];
      const reference = answer.query && typeof answer.query.score === "number" ? answer.query.score : row.score;
      const near = neighbours.filter((n) => Math.abs((reviewScore(n) ?? n.score) - reference) <= 1).length;
      el.similarShare.textContent = neighbours.length
        ? `${near} of ${neighbours.length} (${Math.round((100 * near) / neighbours.length)} %) within ±1 of score ${reference}`
        : "No similar joints kept yet.";
      el.similarList.replaceChildren(...neighbours.map(similarItem));
      el.similarMethod.textContent =
        "A neighbour counts with its reviewed score where it has one. Similarity: cosine of the scorer's features" +
        (answer.method ? ` (${answer.method}).` : ".");
    } catch (failure) {
      el.similarShare.textContent = failure.detail;
    }
  }

  // The neighbour's reviewed grade, or null where it has none.
  function reviewScore(n) {
    const score = n.review_score ?? n.reviewed_score;
    return typeof score === "number" ? score : null;
  }

  function similarItem(n) {
    const li = document.createElement("li");
    const head = document.createElement("div");
    head.className = "similar-head";
    const joint = document.createElement("span");
    joint.className = "similar-joint";
    joint.textContent = `${n.laterality || ""} ${jointName(n.joint)}`.trim();
    const similarity = document.createElement("span");
    similarity.className = "similarity";
    similarity.textContent = typeof n.similarity === "number" ? n.similarity.toFixed(2) : "—";
    similarity.title = "Similarity";
    head.append(joint, similarity);
    const scores = document.createElement("div");
    scores.className = "similar-scores";
    const reviewed =
      reviewScore(n) === null ? "not reviewed" : `reviewed ${reviewScore(n)}${n.decision ? ` (${n.decision})` : ""}`;
    scores.textContent = `model ${n.score} · ${reviewed}`;
    const link = document.createElement("a");
    link.href = `#case=${n.case_id}`;
    link.textContent = n.case_id === state.caseId ? "This case" : `Open case ${String(n.case_id).slice(0, 8)}`;
    li.append(head, scores, link);
    return li;
  }

  // ---------------------------------------------------------------- start

  function start() {
    el.token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    el.token.addEventListener("input", () => {
      const token = el.token.value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      clearAuth();
    });
    el.token.addEventListener("change", () => {
      loadCaseList();
      const caseId = caseFromHash();
      if (caseId && caseId !== state.caseId) openCase(caseId);
    });
    document.getElementById("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      el.token.dispatchEvent(new Event("change"));
    });
    el.forgetToken.addEventListener("click", () => {
      el.token.value = "";
      sessionStorage.removeItem(TOKEN_KEY);
      clearAuth();
    });
    el.scoreForm.addEventListener("submit", scoreFilm);
    el.save.addEventListener("click", saveReview);
    el.showAll.addEventListener("change", loadCaseList);
    el.refreshCases.addEventListener("click", loadCaseList);
    el.closeSimilar.addEventListener("click", () => {
      el.similar.hidden = true;
    });
    window.addEventListener("hashchange", onHash);
    el.overlay.hidden = true;
    loadCaseList();
    onHash();
  }

  start();
})();
