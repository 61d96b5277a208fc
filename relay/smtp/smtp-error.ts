// An SMTP reply as an Error, the shape smtp-server sends back to the client. replies.ts builds every
// reply the SMTP side writes with it.

export interface SmtpError extends Error {
  responseCode: number;
}

export function smtpError(code: number, enhanced: string, text: string): SmtpError {
  const err = new Error(`${enhanced} ${text}`) as SmtpError;
  err.responseCode = code;
  return err;
}
