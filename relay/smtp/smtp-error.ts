// An SMTP reply as an Error, the shape smtp-server sends back to the client. Its own module so that
// fairness.ts and transaction.ts, which import each other's limits, both build replies without a cycle.

export interface SmtpError extends Error {
  responseCode: number;
}

export function smtpError(code: number, enhanced: string, text: string): SmtpError {
  const err = new Error(`${enhanced} ${text}`) as SmtpError;
  err.responseCode = code;
  return err;
}
