// Settings > Payment method: Stripe.js collects the card and confirms a SetupIntent, so the
// card number goes to Stripe only; the form then posts the PaymentMethod id Stripe made,
// and the server attaches it. Also completes a purchase's 3-D Secure step.
(() => {
  const cardForm = document.getElementById("card-form");
  if (!cardForm || typeof Stripe === "undefined") return;
  const stripe = Stripe(cardForm.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const errors = document.getElementById("card-errors");
  let sending = false;

  cardForm.addEventListener("submit", async (event) => {
    if (cardForm.elements.payment_method.value) return; // the id is in: post it
    event.preventDefault();
    if (sending) return;
    sending = true;
    errors.textContent = "";
    const result = await stripe.confirmCardSetup(cardForm.dataset.clientSecret, {
      payment_method: { card },
    });
    if (result.error || !result.setupIntent) {
      errors.textContent = (result.error && result.error.message) || "The card was not accepted.";
      sending = false;
      return;
    }
    cardForm.elements.payment_method.value = result.setupIntent.payment_method;
    cardForm.submit();
  });

  const authenticate = document.getElementById("authenticate-form");
  if (authenticate) {
    authenticate.addEventListener("submit", async (event) => {
      if (authenticate.dataset.done) return;
      event.preventDefault();
      // Whatever the bank answers, the server reads the outcome from Stripe itself.
      await stripe.confirmCardPayment(authenticate.dataset.clientSecret);
      authenticate.dataset.done = "1";
      authenticate.submit();
    });
  }
})();
